"""Accuracy through the product path: the files a shop has, the commands a shop runs.

    python scripts/bench_product_path.py ../shared/data/amazon_beauty_2014 --work /tmp/pp-beauty
    python scripts/bench_product_path.py ../shared/data/amazon_office_2014 --work /tmp/pp-office

Steps:

1. ``scripts/convert_<dataset>.py`` turns the source folder into kgrec input files
   (the dataset is picked from the folder's name: ``*beauty*`` or ``*office*``).
2. Each user's last event (latest timestamp, ties by product id) is held out, with every
   other event of that user on that product; users with fewer than 3 products keep all.
3. The rest is loaded with ``kgrec build-graph`` into a fresh managed Neo4j (its own
   ``KGREC_HOME`` under ``--work``, port ``--port``).
4. ``kgrec train`` (its default protocol: epochs chosen on valid, test after a refit on
   train + valid, then the deployed fit on every loaded event), then
   ``kgrec recommend --all-users -k 20 --weights relevance=1`` (pure relevance).
5. The lists are scored on the held-out events with kgrec's evaluator: full ranking,
   every loaded product of the user excluded, NDCG/Recall at 10 and 20.
6. The baselines (``--baselines``, default ItemKNN and LightGCN; SASRec on request) are
   fitted on the same loaded events (a trainable one's epoch count is chosen by early
   stopping on each user's last loaded event, then it is refitted on all of them) and
   scored by the same evaluator on the same held-out events.

``--config FILE`` gives every ``kgrec train`` of the run a config file (e.g.
``configs/accurate.yaml``), under ``--set`` and each variant's settings.

Ablations run in the same run, on the same graph and held-out events: each ``--variant
NAME=KEY=VALUE[;KEY=VALUE]`` trains another model with those ``kgrec train --set`` settings
(on top of ``--set``), recommends with it the same way, and is scored as row ``kgrec NAME``,
e.g. ``--variant no-kg=model.use_kg=false --variant no-text=model.use_text=false
--variant mean=model.user_encoder=mean``. A ``--recommend-variant NAME=KEY=VALUE[;KEY=VALUE]``
lists the first model's recommendations again with those ``kgrec recommend --set`` settings (no
training), e.g. ``--recommend-variant "pca=rank.exact_max_products=0;rank.retrieval=pca"``, scored as row
``kgrec NAME``. A baseline with other settings is a
``--baseline-variant NAME=BASELINE:KEY=VALUE[;KEY=VALUE]``, e.g. ``sasrec-128=sasrec:embedding_dim=128``,
fitted and scored like the baselines, as row ``NAME``.

With ``--cold-products 0.1`` a random 10% of the catalog loses every loaded event (the
products stay in the catalog, with their text, brand, categories and relations), and the
held-out events on those products are also scored on their own (Recall@20, NDCG@20) for
kgrec (and each ``--variant``), a random ranking and a text-only ranker (cosine of a product's text embedding to
the mean text embedding of the user's loaded products). No collaborative baseline can
place a product nobody interacted with.

Prints one table and writes ``--work/result.json``. The data stays where it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from bench_machine import describe_machine

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="a dataset folder, e.g. ../shared/data/amazon_beauty_2014")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (converted files, database, model, lists)")
    parser.add_argument("--port", type=int, default=7695, help="Bolt port of the benchmark's own managed Neo4j")
    parser.add_argument("--config", type=Path, help="run config passed to every kgrec train, e.g. configs/accurate.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to kgrec train, e.g. train.patience=2")
    parser.add_argument("--baselines", default="itemknn,lightgcn", help="comma-separated: itemknn, lightgcn, sasrec (empty: none)")
    parser.add_argument("--variant", dest="variants", action="append", default=[], metavar="NAME=KEY=VALUE[;KEY=VALUE]",
                        help="an ablation trained and scored in the same run, e.g. no-kg=model.use_kg=false")
    parser.add_argument("--recommend-variant", dest="recommend_variants", action="append", default=[],
                        metavar="NAME=KEY=VALUE[;KEY=VALUE]",
                        help="the first model's lists again with these kgrec recommend settings, e.g. pca=rank.retrieval=pca")
    parser.add_argument("--baseline-variant", dest="baseline_variants", action="append", default=[],
                        metavar="NAME=BASELINE:KEY=VALUE[;KEY=VALUE]",
                        help="a baseline with other settings, e.g. sasrec-128=sasrec:embedding_dim=128")
    parser.add_argument("--cold-products", type=float, default=0.0, help="share of products whose events are all withheld (cold start)")
    args = parser.parse_args()
    if args.config is not None and not args.config.is_file():
        parser.error(f"config file {args.config} does not exist (looked at {args.config.resolve()}); pass e.g. configs/accurate.yaml")
    if not args.data_dir.is_dir():
        # Relative paths are read from the current folder, not from the repository: from a clone
        # elsewhere, ../shared may not be there.
        parser.error(
            f"dataset folder {args.data_dir} does not exist (looked at {args.data_dir.resolve()}); the datasets are "
            "not in the repository: pass the folder's path from where you run the command, or an absolute one, "
            "e.g. /path/to/data/amazon_office_2014"
        )
    # The baselines log each evaluation (SASRec: every 5 epochs), so a long fit shows its progress.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    variants = [parse_variant(text) for text in args.variants]
    recommend_variants = [parse_variant(text) for text in args.recommend_variants]
    if len({name for name, _ in variants + recommend_variants}) < len(variants + recommend_variants):
        parser.error("every --variant and --recommend-variant needs its own NAME")
    baseline_variants = [parse_baseline_variant(text) for text in args.baseline_variants]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KGREC_HOME": str(work / "kgrec-home")}
    env.pop("NEO4J_URI", None)
    kgrec = [str(Path(sys.executable).with_name("kgrec"))]
    port = ["--set", f"store.port={args.port}"]
    timings: dict[str, float] = {}

    def run(name: str, command: list[str]) -> None:
        print(f"$ {' '.join(command)}", flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, cwd=work)
        timings[name] = round(time.perf_counter() - started, 1)

    source = work / "source"
    if not (source / "interactions.csv").exists():
        dataset = "beauty" if "beauty" in args.data_dir.name.lower() else "office"
        run("convert", [sys.executable, str(REPO / "scripts" / f"convert_{dataset}.py"), str(args.data_dir.resolve()), str(source)])
    input_dir, heldout = hold_out_last(source, work / "input")
    cold = withhold_products(input_dir, args.cold_products, work / "cold_products.csv") if args.cold_products else None

    run("db start", kgrec + ["db", "start"] + port)
    try:
        files = ["--products", str(input_dir / "products.csv"), "--interactions", str(input_dir / "interactions.csv")]
        if (input_dir / "relations.csv").exists():
            files += ["--relations", str(input_dir / "relations.csv")]
        run("build-graph", kgrec + ["build-graph", *files] + port)
        for name, settings in [("", [])] + variants:
            overrides = [part for o in args.overrides + settings for part in ("--set", o)]
            if args.config is not None:
                # kgrec runs in --work: the file is passed by its absolute path.
                overrides = ["--config", str(args.config.resolve())] + overrides
            runs, suffix = work / variant_folder(name), f" {name}" if name else ""
            run(f"train{suffix}", kgrec + ["train", "--out", str(runs / "models" / "model")] + port + overrides)
            run(f"recommend --all-users{suffix}", kgrec + ["recommend", "--all-users", "-k", "20", "--weights", "relevance=1",
                                                           "--model", str(runs / "models"), "--out", str(runs / "recs.jsonl")] + port)
        for name, settings in recommend_variants:
            lists = work / variant_folder(name)
            lists.mkdir(exist_ok=True)
            run(f"recommend --all-users {name}", kgrec + ["recommend", "--all-users", "-k", "20", "--weights", "relevance=1",
                                                          "--model", str(work / "runs" / "models"), "--out", str(lists / "recs.jsonl")]
                + port + [part for setting in settings for part in ("--set", setting)])
    finally:
        subprocess.run(kgrec + ["db", "stop"] + port, env=env, cwd=work)

    baselines = [(name.strip(), name.strip(), {}) for name in args.baselines.split(",") if name.strip()]
    baselines += baseline_variants
    from kgrec.train.evaluate import paired_ratio

    per_user: dict[str, torch.Tensor] = {}
    kgrec_rows = [name for name, _ in variants + recommend_variants]
    rows = score(work, heldout, baselines, timings, cold, kgrec_rows, per_user)
    baselines = [name for name, _, _ in baselines]
    # Every row is scored on the same held-out users, so each kgrec / baseline ratio gets the
    # standard error of a paired comparison: what separates the two models, beyond the luck
    # of which users were held out.
    paired = {
        f"{model} / {baseline}": paired_ratio(per_user[model], per_user[baseline])
        for model in ["kgrec"] + [f"kgrec {name}" for name in kgrec_rows]
        for baseline in baselines
        if baseline in per_user
    }
    best = max((rows[name]["ndcg@10"] for name in baselines if name in rows), default=float("nan"))
    result = {
        "data_dir": str(args.data_dir),
        "machine": describe_machine(),
        "train_config": None if args.config is None else str(args.config),
        "train_overrides": args.overrides,
        "variants": {name: settings for name, settings in variants},
        "recommend_variants": {name: settings for name, settings in recommend_variants},
        "baseline_variants": {name: [baseline, settings] for name, baseline, settings in baseline_variants},
        "rows": rows,
        "kgrec_over_best_baseline": rows["kgrec"]["ndcg@10"] / best if best == best else None,
        "paired_ndcg10_ratios": {name: {"ratio": r, "standard_error": se} for name, (r, se) in paired.items()},
        "baselines": baselines,
        "seconds": timings,
        "cold_products": len(cold) if cold is not None else 0,
    }
    (work / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"\n{'model':18} {'NDCG@10':>8} {'R@10':>7} {'NDCG@20':>8} {'R@20':>7}  users")
    for name, m in rows.items():
        print(f"{name:18} {m['ndcg@10']:8.4f} {m['recall@10']:7.4f} {m['ndcg@20']:8.4f} {m['recall@20']:7.4f}  {int(m['users'])}")
    if result["kgrec_over_best_baseline"] is not None:
        print(f"kgrec / best of {', '.join(baselines)}: {result['kgrec_over_best_baseline']:.3f}")
    for name, (ratio, error) in paired.items():
        print(f"NDCG@10 {name}: {ratio:.3f} ± {error:.3f} (paired standard error over the same users)")
    print(f"seconds: {timings}")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"no-kg=model.use_kg=false;train.lr=0.001"`` → ``("no-kg", ["model.use_kg=false", "train.lr=0.001"])``."""
    name, _, settings = text.partition("=")
    if not name or not settings or not name.replace("-", "").replace("_", "").isalnum():
        raise SystemExit(f"--variant {text!r}: expected NAME=KEY=VALUE[;KEY=VALUE], e.g. no-kg=model.use_kg=false")
    return name, [s for s in settings.split(";") if s]


def parse_baseline_variant(text: str) -> tuple[str, str, dict[str, object]]:
    """``"sasrec-128=sasrec:embedding_dim=128"`` → ``("sasrec-128", "sasrec", {"embedding_dim": 128})``."""
    name, _, rest = text.partition("=")
    baseline, _, settings = rest.partition(":")
    pairs = [part.partition("=") for part in settings.split(";") if part]
    if not name or not baseline or not pairs or any(not key or not sep for key, sep, _ in pairs):
        raise SystemExit(
            f"--baseline-variant {text!r}: expected NAME=BASELINE:KEY=VALUE[;KEY=VALUE], e.g. sasrec-128=sasrec:embedding_dim=128"
        )
    return name, baseline, {key: json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
                            for key, _, value in pairs}


def variant_folder(name: str) -> str:
    """Where a variant's model and lists go under ``--work`` (the default model: ``runs``)."""
    return f"runs-{name}" if name else "runs"


def hold_out_last(source: Path, out: Path) -> tuple[Path, pl.DataFrame]:
    """Write the input files without each user's last product; return the held-out pairs.

    Timestamps may be epoch seconds or ISO-8601 (as ``kgrec sample-data`` writes); without a
    timestamp column the row order is the time order, as in ``kgrec build-graph``."""
    out.mkdir(parents=True, exist_ok=True)
    events = pl.read_csv(source / "interactions.csv", infer_schema_length=0)
    if "timestamp" not in events.columns:
        events = events.with_row_index("timestamp").with_columns(pl.col("timestamp").cast(pl.Utf8))
    stamps = events.get_column("timestamp")
    numeric = stamps.cast(pl.Int64, strict=False)
    parsed = numeric if numeric.null_count() == 0 else stamps.str.to_datetime(strict=False).dt.epoch("s")
    events = events.with_columns(parsed.alias("_time")).with_row_index("_row")
    last = (
        events.sort("_time", "product_id", "_row")
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("product_id").last(), pl.col("product_id").n_unique().alias("products"))
        .filter(pl.col("products") >= 3)
        .select("user_id", "product_id")
    )
    kept = events.join(last, on=["user_id", "product_id"], how="anti").sort("_row").drop("_row", "_time")
    kept.write_csv(out / "interactions.csv")
    for name in ("products.csv", "relations.csv", "users.csv"):
        if (source / name).exists() and not (out / name).exists():
            (out / name).symlink_to((source / name).resolve())
    last.write_csv(out.parent / "heldout.csv")
    print(f"Held out {last.height:,} users' last products; {kept.height:,} of {events.height:,} events loaded.")
    return out, last


def withhold_products(input_dir: Path, share: float, out: Path) -> pl.Series:
    """Drop every loaded event of a random ``share`` of the products (seed 0); return their ids."""
    products = pl.read_csv(input_dir / "products.csv", infer_schema_length=0).get_column("product_id")
    cold = products.sample(fraction=share, seed=0).sort()
    events = pl.read_csv(input_dir / "interactions.csv", infer_schema_length=0)
    kept = events.filter(~pl.col("product_id").is_in(cold.implode()))
    kept.write_csv(input_dir / "interactions.csv")
    cold.to_frame().write_csv(out)
    print(f"Cold start: {cold.len():,} products ({share:.0%}) lose all {events.height - kept.height:,} of their loaded events.")
    return cold


def score(
    work: Path, heldout: pl.DataFrame, baselines: list[tuple[str, str, dict[str, object]]], timings: dict[str, float],
    cold: pl.Series | None = None, variants: list[str] = (), per_user: dict[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """kgrec's lists and each ``(row name, baseline, settings)`` scored on the held-out pairs;
    ``per_user`` (when given) gets each row's per-user NDCG@10, in one user order."""
    from kgrec.snapshot.snapshot import load_snapshot
    from kgrec.train.baselines import make_baseline
    from kgrec.train.evaluate import evaluate
    from kgrec.train.split import InteractionSplit, Pairs, aggregate_pairs, leave_last_out

    snapshot = load_snapshot(work / "runs" / "models" / "model" / "snapshot")
    loaded = Pairs.from_frame(aggregate_pairs(snapshot))
    user = snapshot.user_ids.indices(heldout.get_column("user_id"), strict=False)
    product = snapshot.product_ids.indices(heldout.get_column("product_id"), strict=False)
    known = (user >= 0) & (product >= 0)
    print(f"{int((~known).sum())} held-out pairs name a user or product the graph does not have; left out.")
    test = Pairs.from_indices(torch.from_numpy(user[known]), torch.from_numpy(product[known]))
    split = InteractionSplit(len(snapshot.user_ids), len(snapshot.product_ids), loaded, Pairs.empty(), test)

    scores = list_scores(work / "runs" / "recs.jsonl", snapshot, split)
    lists = {"kgrec": scores}
    for name in variants:
        lists[f"kgrec {name}"] = list_scores(work / variant_folder(name) / "recs.jsonl", snapshot, split)
    per_user = {} if per_user is None else per_user

    def scored(name: str, model) -> dict[str, float]:
        values: dict[str, torch.Tensor] = {}
        row = evaluate(model, split, "test", ks=(10, 20), per_user=values)
        per_user[name] = values["ndcg@10"]
        return row

    rows = {name: scored(name, lambda u, s=s: s[u]) for name, s in lists.items()}
    if cold is not None:
        rows.update(score_cold(work, snapshot, split, lists, cold))
    for name, baseline, settings in baselines:
        started = time.perf_counter()
        if make_baseline(baseline, **settings).trainable:
            # The epoch count is chosen on each user's last loaded event, then the model is
            # refitted on every loaded event, as kgrec's deployed fit is.
            selection = make_baseline(baseline, **settings).fit(leave_last_out(snapshot), snapshot)
            model = make_baseline(baseline, **settings, epochs=max(selection.best_epoch, 1)).fit(split, snapshot)
        else:
            model = make_baseline(baseline, **settings).fit(split, snapshot)
        rows[name] = scored(name, model)
        if model.trainable:
            rows[name]["epochs"] = float(model.epochs)
        timings[name] = round(time.perf_counter() - started, 1)
    return rows


def list_scores(path: Path, snapshot, split) -> torch.Tensor:
    """``[users, products]`` scores of the lists in ``path`` (``kgrec recommend --all-users --out``):
    rank k of 20 scores 21 - k, unlisted products -inf."""
    lists = pl.read_ndjson(path)
    scores = torch.full((split.num_users, split.num_products), -torch.inf)
    for user_id, items in zip(lists.get_column("user_id").to_list(), lists.get_column("items").to_list()):
        row = snapshot.user_ids.indices([user_id], strict=False)[0]
        if row >= 0 and items:
            index = torch.from_numpy(snapshot.product_ids.indices(items, strict=False))
            scores[row, index[index >= 0]] = torch.arange(len(items), 0, -1, dtype=torch.float)[index >= 0]
    return scores


def score_cold(
    work: Path, snapshot, split, lists: dict[str, torch.Tensor], cold: pl.Series
) -> dict[str, dict[str, float]]:
    """kgrec (and each variant's ``lists``), random and text-only on the held-out events
    whose product was withheld."""
    from kgrec.config import load_config
    from kgrec.features.text import encode_products
    from kgrec.train.evaluate import evaluate

    cold_index = torch.from_numpy(snapshot.product_ids.indices(cold, strict=False))
    cold_index = cold_index[cold_index >= 0]
    os.environ["KGREC_HOME"] = str(work / "kgrec-home")  # the text cache kgrec train filled
    text = torch.nn.functional.normalize(encode_products(snapshot.tables.products, load_config(None).features, progress=False), dim=-1)
    loaded = split.train_matrix()

    def text_only(users: torch.Tensor) -> torch.Tensor:
        rows = loaded[users.numpy()]
        counts = np.asarray(rows.sum(axis=1)).clip(min=1)
        mean = torch.from_numpy(np.asarray(rows @ text.numpy()) / counts)
        return torch.nn.functional.normalize(mean.float(), dim=-1) @ text.t()

    def random(users: torch.Tensor) -> torch.Tensor:
        return torch.rand(users.numel(), split.num_products, generator=torch.Generator().manual_seed(int(users[0])))

    scorers = {name: (lambda u, s=s: s[u]) for name, s in lists.items()}
    scorers.update({"random": random, "text-only": text_only})
    return {f"{name} (cold)": evaluate(fn, split, "test", ks=(10, 20), restrict_products=cold_index) for name, fn in scorers.items()}


if __name__ == "__main__":
    main()
