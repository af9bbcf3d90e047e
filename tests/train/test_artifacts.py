"""Model directories: round trip, the latest pointer, never half-written, clear errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import kgrec.train.artifacts as artifacts
from kgrec.config import KgrecConfig
from kgrec.errors import ConfigError, ModelNotFoundError
from kgrec.models.config import ModelConfig
from kgrec.snapshot import snapshot_from_tables
from kgrec.models.history import Histories
from kgrec.train.artifacts import KgrecRecommender, load_model_dir, save_model_dir
from kgrec.train.config import TrainConfig
from kgrec.train.split import leave_last_out
from tests.train.test_loop import planted_tables


@pytest.fixture(scope="module")
def trained():
    snapshot = snapshot_from_tables(planted_tables(num_users=40))
    split = leave_last_out(snapshot)
    config = KgrecConfig(model=ModelConfig(dim=8, layers=1, use_text=False, user_encoder="mean", history_length=3),
                         train=TrainConfig(epochs=2, device="cpu"))
    result = KgrecRecommender(config, seed=7).fit(split, snapshot)
    return snapshot, config, result


def save(result, out, metrics, seed=None):
    """save_model_dir with another seed recorded (the weights are the same)."""
    import copy

    model = copy.copy(result)
    if seed is not None:
        model.seed = seed
    return save_model_dir(model, out, metrics)


def test_save_and_load_model_dir_round_trip(trained, tmp_path):
    snapshot, config, result = trained
    out = save_model_dir(result, tmp_path / "runs" / "m1", metrics={"test": {"ndcg@10": 0.5}})
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
    histories = Histories.from_events(torch.tensor([0, 0, 1]), torch.tensor([3, 5, 2]), torch.tensor([1, 2, 1]),
                                      torch.ones(3), 2)
    assert torch.allclose(loaded.score(histories), result.score(histories))
    # The real-time rule rebuilds a user from their events: the one user of the fit whose
    # whole train history is given gets exactly their stored (training-time) vector.
    train = leave_last_out(snapshot).train
    mine = train.select(train.user_index == 0)
    own = Histories.from_events(torch.zeros(len(mine), dtype=torch.long), mine.product_index, mine.timestamp, mine.weight, 1)
    assert torch.allclose(loaded.user_vectors(own)[0], loaded.user_embedding[0], atol=1e-5)


def test_latest_pointer_follows_the_newest_model(trained, tmp_path):
    snapshot, config, result = trained
    runs = tmp_path / "runs"
    save(result, runs / "a", {"run": "a"}, seed=1)
    save(result, runs / "b", {"run": "b"}, seed=2)
    assert load_model_dir(runs).metrics == {"run": "b"}
    assert load_model_dir(runs / "latest").seed == 2
    save(result, runs / "a", {"run": "a2"}, seed=3)  # replace a
    assert load_model_dir(runs).metrics == {"run": "a2"}


def test_model_dir_never_half_written(trained, tmp_path, monkeypatch):
    snapshot, config, result = trained
    runs = tmp_path / "runs"
    save(result, runs / "m", {"run": 1}, seed=1)

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifacts, "plot_curves", crash)  # fails after most files are written
    with pytest.raises(RuntimeError, match="disk full"):
        save(result, runs / "m", {"run": 2}, seed=2)
    with pytest.raises(RuntimeError):
        save(result, runs / "new", {"run": 2}, seed=2)
    assert not (runs / "new").exists()
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "m"]  # no temp dirs left behind
    assert load_model_dir(runs).metrics == {"run": 1}  # the earlier model is intact


def test_load_model_dir_missing_or_incomplete_raises(trained, tmp_path):
    snapshot, config, result = trained
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model_dir(tmp_path / "nothing")
    out = save(result, tmp_path / "m", {}, seed=1)
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
    out = save(result, tmp_path / "m", {"ndcg@10": torch.tensor(0.25).item()}, seed=1)
    assert json.loads((out / "metrics.json").read_text()) == {"ndcg@10": 0.25}


def test_save_model_dir_refuses_a_folder_of_the_users_files(trained, tmp_path):
    _, _, result = trained
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a kgrec model directory.*notes.txt"):
        save_model_dir(result, folder, {})
    assert (folder / "notes.txt").read_text() == "x" and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_save_model_dir_never_replaces_a_users_own_latest_file(trained, tmp_path):
    _, _, result = trained
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "latest").write_text("my shopping list\n")
    with pytest.raises(ConfigError, match="not kgrec's pointer"):
        save_model_dir(result, runs / "m", {})
    assert (runs / "latest").read_text() == "my shopping list\n"


def test_check_model_out_refuses_an_unwritable_place_before_training(tmp_path):
    from kgrec.train.artifacts import check_model_out

    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_model_out(tmp_path / "a-file" / "models" / "m")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_model_out(tmp_path / "a-file")
    assert check_model_out(tmp_path / "new" / "m") == tmp_path / "new" / "m"


@pytest.mark.parametrize(("time_gaps", "block"), [(False, "pre_ln"), (True, "pre_ln"), (False, "gated")])
def test_transformer_user_encoder_round_trips_without_pyg(tmp_path, time_gaps, block):
    import subprocess
    import sys

    snapshot = snapshot_from_tables(planted_tables(num_users=40))
    split = leave_last_out(snapshot)
    config = KgrecConfig(model=ModelConfig(dim=8, layers=1, use_text=False, user_encoder="transformer", sequence_length=4,
                                           time_gaps=time_gaps, encoder_block=block),
                         train=TrainConfig(epochs=2, sequence_batch_size=16, device="cpu"))
    result = KgrecRecommender(config, seed=7).fit(split, snapshot)
    out = save_model_dir(result, tmp_path / "m", metrics={})
    loaded = load_model_dir(out)
    assert loaded.user_encoder is not None and not loaded.user_encoder.training
    assert loaded.user_encoder.time_gaps == time_gaps
    assert loaded.user_encoder.encoder.block == block
    histories = Histories.from_events(torch.tensor([0, 0, 1]), torch.tensor([3, 5, 2]), torch.tensor([1, 2, 1]),
                                      torch.ones(3), 2)
    assert torch.allclose(loaded.score(histories), result.score(histories), atol=1e-6)
    # The same two events a month apart: only a model that reads time gaps ranks differently.
    later = Histories.from_events(torch.tensor([0, 0, 1]), torch.tensor([3, 5, 2]),
                                  torch.tensor([1, 2 + 30 * 86400, 1]), torch.ones(3), 2)
    assert torch.allclose(loaded.score(later), loaded.score(histories), atol=1e-6) != time_gaps
    # Served as an ensemble of one (numpy inference for pre-LN blocks): the module's own vectors.
    index, weight = histories.latest(4, 1.0)
    stamps = histories.latest_timestamps(4) if time_gaps else None
    with torch.no_grad():
        module = loaded.user_encoder.user_vectors(loaded.product_embedding, index, weight, stamps)
    assert torch.allclose(loaded.user_vectors(histories), torch.nn.functional.normalize(module, dim=-1), atol=1e-5)
    # Loading a model (and encoding users) must not pull in PyTorch Geometric.
    code = (
        "import sys, torch; from kgrec.train.artifacts import load_model_dir; from kgrec.models.history import Histories;"
        f"m = load_model_dir({str(out)!r});"
        "m.score(Histories.from_events(torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.ones(1), 1));"
        "print('torch_geometric' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_transformer_model_dir_without_its_encoder_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    snapshot = snapshot_from_tables(planted_tables(num_users=40))
    split = leave_last_out(snapshot)
    config = KgrecConfig(model=ModelConfig(dim=8, layers=1, use_text=False, user_encoder="transformer", sequence_length=4),
                         train=TrainConfig(epochs=1, device="cpu"))
    out = save_model_dir(KgrecRecommender(config, seed=7).fit(split, snapshot), tmp_path / "m", metrics={})
    path = out / "embeddings.safetensors"
    save_file({k: v for k, v in load_file(str(path)).items() if not k.startswith("user_encoder.")}, str(path))
    with pytest.raises(ModelNotFoundError, match="lacks the transformer user encoder"):
        load_model_dir(out)


@pytest.mark.parametrize("encoder", ["transformer", "mean"])
def test_ensemble_scores_the_mean_of_its_members_and_round_trips(tmp_path, encoder):
    snapshot = snapshot_from_tables(planted_tables(num_users=40))
    split = leave_last_out(snapshot).merge_valid_into_train()

    def config(size):
        return KgrecConfig(model=ModelConfig(dim=8, layers=1, use_text=False, user_encoder=encoder, sequence_length=4,
                                             history_length=3, ensemble_size=size),
                           train=TrainConfig(epochs=2, sequence_batch_size=16, device="cpu"))

    ensemble = KgrecRecommender(config(2), seed=7).fit(split, snapshot)
    members = [KgrecRecommender(config(1), seed=s).fit(split, snapshot) for s in (7, 8)]  # seeds seed, seed + 1
    assert ensemble.product_embedding.shape == (snapshot.num_products, 16)
    assert torch.allclose(ensemble.product_embedding.norm(dim=-1), torch.ones(snapshot.num_products), atol=1e-5)
    histories = Histories.from_events(torch.tensor([0, 0, 1]), torch.tensor([3, 5, 2]), torch.tensor([1, 2, 1]),
                                      torch.ones(3), 2)
    mean_of_members = (members[0].score(histories) + members[1].score(histories)) / 2
    assert torch.allclose(ensemble.score(histories), mean_of_members, atol=1e-5)
    assert not torch.allclose(members[0].score(histories), members[1].score(histories), atol=1e-3)
    assert len(ensemble.history["members"]) == 2 and ensemble.best_epoch == 2
    loaded = load_model_dir(save_model_dir(ensemble, tmp_path / "m", metrics={}))
    assert torch.allclose(loaded.score(histories), ensemble.score(histories), atol=1e-6)


def test_ensemble_chooses_the_mean_of_its_members_epochs_and_scores_itself_on_valid():
    snapshot = snapshot_from_tables(planted_tables(num_users=40))
    split = leave_last_out(snapshot)
    config = KgrecConfig(model=ModelConfig(dim=8, layers=1, use_text=False, user_encoder="transformer", sequence_length=4,
                                           ensemble_size=3),
                         train=TrainConfig(epochs=6, patience=1, sequence_batch_size=16, device="cpu"))
    ensemble = KgrecRecommender(config, seed=3).fit(split, snapshot)
    chosen = [member["best_epoch"] for member in ensemble.history["members"]]
    assert ensemble.best_epoch == round(sum(chosen) / 3)
    from kgrec.train.evaluate import evaluate

    assert ensemble.best_valid_ndcg == pytest.approx(evaluate(ensemble, split, "valid")["ndcg@10"])


def test_model_dir_whose_width_cannot_hold_its_members_is_refused(trained, tmp_path):
    snapshot, config, result = trained
    out = save_model_dir(result, tmp_path / "m", metrics={})  # 8-d
    settings = (out / "config.yaml").read_text().replace("ensemble_size: 1", "ensemble_size: 3")
    (out / "config.yaml").write_text(settings)
    with pytest.raises(ModelNotFoundError, match="cannot hold the 3 ensemble members"):
        load_model_dir(out)


def test_co_interactions_add_to_the_cosine_and_round_trip(trained, tmp_path):
    from kgrec.models.config import ModelConfig as Model
    from kgrec.rank.retrieval import Candidates
    from kgrec.train.recommender import Recommender

    snapshot, config, result = trained
    assert result.co_interactions is not None and result.co_interaction_weight == pytest.approx(0.1)
    histories = Histories.from_events(torch.tensor([0, 0, 1]), torch.tensor([3, 5, 2]), torch.tensor([1, 2, 1]),
                                      torch.ones(3), 2)
    cosine = Recommender.score(result, histories)
    expected = cosine + 0.1 * result.co_interactions.scores(histories)
    assert torch.allclose(result.score(histories), expected)
    assert not torch.allclose(result.score(histories), cosine)  # the paths change the ranking's input

    loaded = load_model_dir(save_model_dir(result, tmp_path / "m", metrics={}))
    assert loaded.co_interactions is not None
    assert torch.allclose(loaded.score(histories), expected)

    # Retrieved candidates (found by the vectors alone) are joined by the user's products with the
    # most co-interaction weight and scored as the full pass scores them; the catalog's highest
    # relevance covers the best candidate.
    index = torch.tensor([[0, 4, -1], [1, 2, 3]])
    cosine_at = cosine.gather(1, index.clamp(min=0)).masked_fill(index < 0, -torch.inf)
    vectors = loaded.user_vectors(histories)
    candidates = loaded.add_co_interactions(
        Candidates(index, cosine_at, torch.zeros(2), torch.full((2,), -torch.inf)), histories, vectors, limit=3
    )
    kept = candidates.product_index >= 0
    assert torch.allclose(candidates.relevance[kept], expected.gather(1, candidates.product_index.clamp(min=0))[kept])
    joined = set(loaded.co_interactions.top(loaded.co_interactions.entries(histories), histories, 3)[0].tolist()) - {-1}
    assert joined and joined <= set(candidates.product_index[0].tolist())
    assert set(index[0].tolist()) - {-1} <= set(candidates.product_index[0].tolist())
    assert torch.equal(candidates.highest, candidates.relevance.max(dim=1).values)

    without = KgrecConfig(model=Model(**{**config.model.model_dump(), "co_interaction_neighbours": 0}), train=config.train)
    plain = KgrecRecommender(without, seed=7).fit(leave_last_out(snapshot), snapshot)
    assert plain.co_interactions is None and plain.co_interaction_weight == 0.0
    assert torch.allclose(plain.score(histories), Recommender.score(plain, histories))
    assert not any(k.startswith("co_interaction.") for k in _saved_tensors(save_model_dir(plain, tmp_path / "p", metrics={})))


def test_the_co_interaction_weight_is_a_rank_setting_a_ranking_command_overrides(trained, tmp_path):
    from kgrec.config import load_config
    from kgrec.service import LoadedModel
    from kgrec.train.recommender import Recommender

    snapshot, _, result = trained
    as_trained = copy.copy(result)  # the fixture's model, as if trained with rank.co_interaction_weight 0.3
    as_trained.config = {**result.config, "rank": {**result.config["rank"], "co_interaction_weight": 0.3}}
    path = save_model_dir(as_trained, tmp_path / "m", metrics={}, snapshot=snapshot)
    histories = Histories.from_events(torch.tensor([0, 0]), torch.tensor([3, 5]), torch.tensor([1, 2]), torch.ones(2), 1)
    cosine = Recommender.score(result, histories)
    paths = result.co_interactions.scores(histories)

    own = LoadedModel(load_config(), path).recommender  # no rank settings given: the model's own
    assert own.co_interaction_weight == pytest.approx(0.3)
    assert torch.allclose(own.score(histories), cosine + 0.3 * paths)
    off = LoadedModel(load_config(overrides=["rank.co_interaction_weight=0"]), path).recommender
    assert off.co_interaction_weight == 0.0
    assert torch.allclose(off.score(histories), cosine)


def _saved_tensors(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "embeddings.safetensors"))


def test_a_model_saved_with_the_weight_in_its_model_section_loads_with_it_as_a_rank_setting(trained, tmp_path):
    import yaml

    _, _, result = trained
    path = save_model_dir(result, tmp_path / "m", metrics={})
    saved = yaml.safe_load((path / "config.yaml").read_text())
    saved["model"]["co_interaction_weight"] = 0.2  # where models kept it before it was a rank setting
    del saved["rank"]["co_interaction_weight"]
    (path / "config.yaml").write_text(yaml.safe_dump(saved))

    loaded = load_model_dir(path)
    assert loaded.co_interaction_weight == pytest.approx(0.2)
    KgrecConfig.model_validate(loaded.config)  # refits (kgrec evaluate) accept its config
