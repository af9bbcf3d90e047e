"""Training with torch.distributed: two processes (gloo on the CPU) train one model on
the sample shop, and it matches single-process training within seed noise."""

from __future__ import annotations

import pytest

from kgrec.config import KgrecConfig
from kgrec.ingest.synthetic import write_sample_shop
from kgrec.ingest.validate import load_tables
from kgrec.snapshot import snapshot_from_tables
from kgrec.train.artifacts import KgrecRecommender
from kgrec.train.evaluate import evaluate
from kgrec.train.split import leave_last_out


@pytest.fixture(scope="module")
def sample_shop(tmp_path_factory):
    paths = write_sample_shop(tmp_path_factory.mktemp("shop"), num_products=300, num_users=300, events_per_user=12)
    tables, _ = load_tables(paths["products"], paths["interactions"], paths.get("relations"), paths.get("users"))
    snapshot = snapshot_from_tables(tables)
    return snapshot, leave_last_out(snapshot)


def fit(shop, nproc: int, seed: int) -> tuple[KgrecRecommender, float]:
    snapshot, split = shop
    config = KgrecConfig.model_validate(
        {"model": {"use_text": False, "dim": 32}, "train": {"nproc": nproc, "device": "cpu", "sequence_batch_size": 64}}
    )
    model = KgrecRecommender(config, seed=seed, epochs=6).fit(split, snapshot)
    return model, evaluate(model, split, "test", ks=(10,))["ndcg@10"]


@pytest.mark.slow
def test_two_processes_match_one_within_seed_noise(sample_shop):
    one, one_ndcg = fit(sample_shop, nproc=1, seed=0)
    _, other_seed_ndcg = fit(sample_shop, nproc=1, seed=1)
    two, two_ndcg = fit(sample_shop, nproc=2, seed=0)
    assert one.history["processes"] == 1 and two.history["processes"] == 2
    assert [r["epoch"] for r in two.history["epochs"]] == [1, 2, 3, 4, 5, 6]
    # Both learn (random ranking of 300 products scores ~0.02) ...
    assert one_ndcg > 0.1 and two_ndcg > 0.1
    # ... and two processes differ from one by no more than a change of seed does, plus slack.
    noise = abs(one_ndcg - other_seed_ndcg)
    assert abs(two_ndcg - one_ndcg) <= 2 * noise + 0.03, (one_ndcg, other_seed_ndcg, two_ndcg)
    # The training loss falls in both.
    assert two.history["epochs"][-1]["loss"] < two.history["epochs"][0]["loss"]


@pytest.mark.slow
def test_torchrun_processes_train_one_model_and_rank_0_writes_it(tmp_path):
    """`torchrun --nproc-per-node 2 kgrec train --graph …`: the route to many hosts, on one."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from kgrec.snapshot.snapshot import write_snapshot

    paths = write_sample_shop(tmp_path / "shop", num_products=300, num_users=300, events_per_user=12)
    tables, _ = load_tables(paths["products"], paths["interactions"], paths.get("relations"), paths.get("users"))
    write_snapshot(tables, tmp_path / "snapshot")
    kgrec = str(Path(sys.executable).with_name("kgrec"))
    settings = ["model.use_text=false", "model.dim=32", "train.device=cpu", "train.sequence_batch_size=64", "train.epochs=4"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", kgrec, "train",
               "--graph", str(tmp_path / "snapshot"), "--out", str(tmp_path / "model")]
    command += [part for s in settings for part in ("--set", s)]
    env = {**os.environ, "KGREC_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("Model written to") == 1  # rank 0 reports; rank 1 stays quiet
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert history["processes"] == 2
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["test"]["ndcg@10"] > 0.1  # random ranking of 300 products scores ~0.02


def test_torchrun_without_a_snapshot_is_refused_before_anything_runs(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kgrec.cli import cli

    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KGREC_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "model")])
    assert result.exit_code != 0
    assert "torchrun" in result.output and "--graph" in result.output
    assert not (tmp_path / "model").exists() and not (tmp_path / "home").exists()
