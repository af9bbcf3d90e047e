"""Model directories: round trip, the latest pointer, never half-written, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

import kgrec.train.artifacts as artifacts
from kgrec.config import KgrecConfig
from kgrec.errors import ModelNotFoundError
from kgrec.features.config import FeaturesConfig
from kgrec.models.config import ModelConfig
from kgrec.snapshot import snapshot_from_tables
from kgrec.train.artifacts import load_model_dir, save_model_dir
from kgrec.train.config import TrainConfig
from kgrec.train.loop import train_model
from kgrec.train.split import leave_last_out
from tests.train.test_loop import planted_tables


@pytest.fixture(scope="module")
def trained():
    snapshot = snapshot_from_tables(planted_tables(num_users=40))
    split = leave_last_out(snapshot)
    config = KgrecConfig(model=ModelConfig(dim=8, layers=1, use_text=False, history_length=3),
                         train=TrainConfig(epochs=2, device="cpu"))
    result = train_model(snapshot, split, config.model, config.train, FeaturesConfig(), seed=7, progress=False)
    return snapshot, config, result


def test_save_and_load_model_dir_round_trip(trained, tmp_path):
    snapshot, config, result = trained
    out = save_model_dir(result, tmp_path / "runs" / "m1", config, seed=7,
                         snapshot_hash=snapshot.content_hash, metrics={"test": {"ndcg@10": 0.5}})
    for name in ("embeddings.safetensors", "config.yaml", "seed", "metrics.json", "curves.png",
                 "snapshot_hash", "history.json", "ids/user.parquet", "ids/product.parquet"):
        assert (out / name).is_file(), name
    loaded = load_model_dir(out)
    assert torch.equal(loaded.product_embedding, result.product_embedding)
    assert torch.equal(loaded.user_embedding, result.user_embedding)
    assert loaded.product_ids == snapshot.product_ids and loaded.user_ids == snapshot.user_ids
    assert loaded.seed == 7 and loaded.snapshot_hash == snapshot.content_hash
    assert loaded.metrics == {"test": {"ndcg@10": 0.5}}
    assert loaded.config["model"]["dim"] == 8
    assert torch.allclose(loaded.score(torch.tensor([0, 1])), result.score(torch.tensor([0, 1])))
    # The real-time rule rebuilds a stored user from their history.
    u = 0
    mask = loaded.history_weight[u] > 0
    vec = loaded.user_vector(loaded.history_index[u][mask], torch.ones(int(mask.sum())))
    assert torch.allclose(vec, loaded.user_embedding[u], atol=1e-5)


def test_latest_pointer_follows_the_newest_model(trained, tmp_path):
    snapshot, config, result = trained
    runs = tmp_path / "runs"
    save_model_dir(result, runs / "a", config, 1, snapshot.content_hash, {"run": "a"})
    save_model_dir(result, runs / "b", config, 2, snapshot.content_hash, {"run": "b"})
    assert load_model_dir(runs).metrics == {"run": "b"}
    assert load_model_dir(runs / "latest").seed == 2
    save_model_dir(result, runs / "a", config, 3, snapshot.content_hash, {"run": "a2"})  # replace a
    assert load_model_dir(runs).metrics == {"run": "a2"}


def test_model_dir_never_half_written(trained, tmp_path, monkeypatch):
    snapshot, config, result = trained
    runs = tmp_path / "runs"
    save_model_dir(result, runs / "m", config, 1, snapshot.content_hash, {"run": 1})

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifacts, "plot_curves", crash)  # fails after most files are written
    with pytest.raises(RuntimeError, match="disk full"):
        save_model_dir(result, runs / "m", config, 2, snapshot.content_hash, {"run": 2})
    with pytest.raises(RuntimeError):
        save_model_dir(result, runs / "new", config, 2, snapshot.content_hash, {"run": 2})
    assert not (runs / "new").exists()
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "m"]  # no temp dirs left behind
    assert load_model_dir(runs).metrics == {"run": 1}  # the earlier model is intact


def test_load_model_dir_missing_or_incomplete_raises(trained, tmp_path):
    snapshot, config, result = trained
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model_dir(tmp_path / "nothing")
    out = save_model_dir(result, tmp_path / "m", config, 1, snapshot.content_hash, {})
    (out / "embeddings.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="incomplete.*embeddings.safetensors"):
        load_model_dir(out)
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "embeddings.safetensors").write_text("garbage")
    for name in ("config.yaml", "seed", "snapshot_hash", "metrics.json"):
        (tmp_path / "m2" / name).write_text("1")
    (tmp_path / "m2" / "ids").mkdir()
    for t in ("user", "product", "brand", "category"):
        (tmp_path / "m2" / "ids" / f"{t}.parquet").write_text("x")
    with pytest.raises(ModelNotFoundError, match="cannot be read"):
        load_model_dir(tmp_path / "m2")


def test_metrics_json_is_valid_json(trained, tmp_path):
    snapshot, config, result = trained
    out = save_model_dir(result, tmp_path / "m", config, 1, snapshot.content_hash, {"ndcg@10": torch.tensor(0.25).item()})
    assert json.loads((out / "metrics.json").read_text()) == {"ndcg@10": 0.25}
