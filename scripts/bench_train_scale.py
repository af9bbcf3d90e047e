#!/usr/bin/env python
"""Training epoch time as the shop grows: cached propagation against full propagation.

Issue 12's target: an S2 epoch (300k products, 300k users, 3M events) takes at most 3.5×
an S1 epoch (100k / 100k / 1M) in the same run, which needs an epoch whose cost grows
linearly with the data. For each shop size this script writes the synthetic shop
(``kgrec sample-data``'s generator), reads it through kgrec's ingest validation into a
snapshot in memory (no Neo4j: training reads a snapshot either way), and times
``kgrec train``'s default model (transformer user encoder, text off as in the issue's
table) for one epoch with:

- ``train.propagation=cached`` (the default): the epoch's context refresh plus ``--cached-steps``
  timed steps (0: the whole epoch);
- ``train.propagation=full``: every step propagates the whole graph; ``--full-steps`` timed steps.

Where fewer steps than an epoch's are timed, the epoch time is seconds per step × steps per
epoch (+ the refresh), and the table says "estimated".

Usage:
    python scripts/bench_train_scale.py --sizes 100000,300000 --events-per-user 10
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from bench_machine import describe_machine


def shop_snapshot(size: int, events_per_user: int, folder: Path):
    from kgrec.ingest.synthetic import write_sample_shop
    from kgrec.ingest.validate import load_tables
    from kgrec.snapshot import snapshot_from_tables

    paths = write_sample_shop(folder, num_products=size, num_users=size, events_per_user=events_per_user)
    tables, _ = load_tables(paths["products"], paths["interactions"], paths.get("relations"), paths.get("users"))
    return snapshot_from_tables(tables)


def epoch_seconds(snapshot, propagation: str, max_steps: int) -> dict:
    from kgrec.config import KgrecConfig
    from kgrec.models.history import Histories
    from kgrec.train.loop import NegativeProposal, Texts, _sequence_loss, build_model, prepare_steps, training_windows
    from kgrec.train.split import leave_last_out

    config = KgrecConfig.model_validate({"model": {"use_text": False}, "train": {"propagation": propagation, "device": "cpu"}})
    train = leave_last_out(snapshot).merge_valid_into_train().train
    windows, weights, _ = training_windows(
        Histories.from_events(train.user_index, train.product_index, train.timestamp, train.weight, snapshot.num_users),
        config.model.sequence_length,
    )
    steps = -(-windows.shape[0] // config.train.sequence_batch_size)
    torch.manual_seed(0)
    started = time.perf_counter()
    model = build_model(snapshot, train, config.model, Texts())
    cached = propagation == "cached"
    optimizer = prepare_steps(model, config.train, cached)  # as kgrec train sets up its steps
    setup = time.perf_counter() - started
    proposal = NegativeProposal(torch.bincount(train.product_index, minlength=snapshot.num_products))
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(windows.shape[0], generator=generator)
    timed = min(max_steps, steps) if max_steps > 0 else steps
    refresh = 0.0
    if cached:
        started = time.perf_counter()
        model.refresh_context()  # once per epoch
        refresh = time.perf_counter() - started
    started = time.perf_counter()
    for step in range(timed):
        batch = order[step * config.train.sequence_batch_size : (step + 1) * config.train.sequence_batch_size]
        loss = _sequence_loss(model, windows[batch], weights[batch], None, config.train, proposal, generator,
                              torch.device("cpu"), cached)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    return {
        "propagation": propagation,
        "steps_per_epoch": steps,
        "steps_timed": timed,
        "seconds_per_step": seconds / timed,
        "refresh_seconds": refresh,
        "epoch_seconds": refresh + seconds * steps / timed,
        "estimated": timed < steps,
        "setup_seconds": setup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,300000", help="products = users per shop, comma-separated")
    parser.add_argument("--events-per-user", type=int, default=10)
    parser.add_argument("--cached-steps", type=int, default=0, help="steps timed with cached propagation (0: the epoch)")
    parser.add_argument("--full-steps", type=int, default=10, help="steps timed with full propagation")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kgrec-train-scale-") as tmp:
        for size in sizes:
            snapshot = shop_snapshot(size, args.events_per_user, Path(tmp) / str(size))
            events = snapshot.tables.interactions.height
            for propagation in ("cached", "full"):
                row = {"products": size, "users": size, "events": events, **epoch_seconds(snapshot, propagation, args.cached_steps if propagation == "cached" else args.full_steps)}
                row["load_average"] = os.getloadavg()[0]
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'shop':>22} {'propagation':>11} {'s/step':>8} {'epoch s':>9}  steps")
    for r in rows:
        shop = f"{r['products'] // 1000}k/{r['users'] // 1000}k/{r['events'] / 1e6:.1f}M"
        note = " (estimated)" if r["estimated"] else ""
        print(f"{shop:>22} {r['propagation']:>11} {r['seconds_per_step']:8.3f} {r['epoch_seconds']:9.1f}  {r['steps_per_epoch']}{note}")
    for propagation in ("cached", "full"):
        epochs = [r["epoch_seconds"] for r in rows if r["propagation"] == propagation]
        if len(epochs) >= 2:
            print(f"{propagation}: largest / smallest shop epoch = {epochs[-1] / epochs[0]:.2f}× "
                  f"for {sizes[-1] / sizes[0]:.1f}× the data")
    if args.json:
        args.json.write_text(json.dumps({"machine": describe_machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
