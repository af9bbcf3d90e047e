"""Text encoding speed: products per second and fidelity of each encoder setting, in one run.

    python scripts/bench_text.py /tmp/office/products.csv --limit 2000   # scripts/convert_office.py output
    python scripts/bench_text.py shop/products.csv --limit 2000          # kgrec sample-data --out shop/

Reads a kgrec products file, builds each product's text exactly as training does
(``product_texts`` with ``features.description_chars``) and encodes the first ``--limit``
products with the bundled all-MiniLM-L6-v2 under each setting, through kgrec's own
encoder (``SentenceTransformerEncoder``, no cache). The first row is the setup before
this change (fp32, the model's own 256-token limit): it is the speed baseline and the
reference for fidelity.

For every setting: products/s (texts encoded per second of ``encode``, after a warm-up
batch) and its ratio to the baseline; products per CPU-second (texts per second of this
process's CPU time), which a busy machine changes much less than wall time: on an idle
2-core machine the wall-clock speed is at most twice it; the mean and min cosine of each
product's vector to its reference vector; and the mean overlap of each product's 10 nearest neighbours
among the encoded products (cosine) with its reference neighbours. The load average is
printed with each row: on a shared machine only the ratios and the CPU-second figures compare.

``--cache-rows N`` also times the text cache on N random 384-d rows (no model): the
first write, adding one row (the size of the file it writes), and reading the whole
cache back in a new ``TextCache``, as ``encode_texts`` does on every call.

``--start-rows N`` also times the product IDs' text start (``model.id_init: text``,
``text_principal_components`` to 64 columns) on N random 384-d rows, against one pass of
the same rows through a 384 → 64 linear projection in the same run (what the model's text
projection costs over the catalog, at least once per fit), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the kgrec CLI does
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from kgrec.features.config import FeaturesConfig  # noqa: E402
from kgrec.features.text import (  # noqa: E402
    Precision,
    SentenceTransformerEncoder,
    TextCache,
    product_texts,
    resolve_text_model,
    text_hash,
)
from kgrec.ingest.readers import read_table  # noqa: E402
from kgrec.ingest.tables import IngestReport  # noqa: E402
from kgrec.ingest.validate import validate_products  # noqa: E402

SETTINGS: list[tuple[Precision, int | None]] = [  # (precision, max_tokens): the first is the baseline
    ("fp32", None),
    ("fp32", 128),
    ("int8", 128),
    ("bf16", 128),
    ("bf16", None),
]
NEIGHBOURS = 10


def neighbours(emb: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """``[n, k]`` indices of each row's k most similar other rows (cosine; rows are unit vectors)."""
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    return sim.topk(k, dim=1).indices


def neighbour_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean share of each row's neighbours in ``a`` that are also its neighbours in ``b``."""
    hits = (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).float()
    return float(hits.mean())


def time_cache(num_rows: int, dim: int = 384) -> None:
    """Write, extend by one row and read back a cache of ``num_rows`` random rows."""
    keys = [text_hash("bench", str(i)) for i in range(num_rows + 1)]
    emb = torch.nn.functional.normalize(torch.randn(num_rows + 1, dim), dim=-1)
    with tempfile.TemporaryDirectory(prefix="kgrec-bench-cache-") as folder:
        start = time.perf_counter()
        TextCache(Path(folder), "bench").add(keys[:num_rows], emb[:num_rows])
        write = time.perf_counter() - start
        before = {p.name for p in Path(folder).glob("*/*.safetensors")}
        start = time.perf_counter()
        TextCache(Path(folder), "bench").add(keys[num_rows:], emb[num_rows:])
        add_one = time.perf_counter() - start
        (new,) = [p for p in Path(folder).glob("*/*.safetensors") if p.name not in before]
        new_size = new.stat().st_size
        start = time.perf_counter()
        rows = TextCache(Path(folder), "bench").rows(keys)
        read = time.perf_counter() - start
        assert torch.equal(rows, emb)
        total = sum(p.stat().st_size for p in Path(folder).glob("*/*.safetensors"))
    print(f"text cache, {num_rows:,} rows ({total / 2**20:.0f} MiB): first write {write:.1f} s; "
          f"adding one row {add_one * 1000:.0f} ms (reads the cache, writes a {new_size:,}-byte shard); "
          f"reading all rows back {read:.1f} s; load avg {os.getloadavg()[0]:.2f}")


def time_text_start(num_rows: int, dim: int = 384, columns: int = 64) -> None:
    """The ID text start on ``num_rows`` random rows, against one projection pass over them."""
    import resource

    from kgrec.models.kgrec_model import text_principal_components

    text = torch.nn.functional.normalize(torch.randn(num_rows, dim), dim=-1)
    projection = torch.randn(dim, columns)
    start = time.perf_counter()
    projected = text @ projection
    project_s = time.perf_counter() - start
    start = time.perf_counter()
    ids = text_principal_components(text, columns, std=0.3)
    start_s = time.perf_counter() - start
    assert ids.shape == projected.shape
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"ID text start, {num_rows:,} rows x {dim} -> {columns}: {start_s:.2f} s; one projection pass "
          f"{project_s:.2f} s (ratio {start_s / max(project_s, 1e-9):.1f}x); rows {text.numel() * 4 / 2**30:.2f} GiB, "
          f"peak RSS {peak:.2f} GiB; load avg {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("products", type=Path, help="A kgrec products file (csv, tsv, parquet, jsonl).")
    parser.add_argument("--limit", type=int, default=2000, help="Encode the first N products (0: only --cache-rows / --start-rows).")
    parser.add_argument("--batch-size", type=int, default=FeaturesConfig().batch_size)
    parser.add_argument("--settings", default=None,
                        help="PRECISION:MAX_TOKENS,... to time instead of the standard rows (the first is still the "
                             "fp32 baseline), e.g. bf16:128,bf16:96,bf16:64 (a max_tokens of 0: the model's own limit)")
    parser.add_argument("--cache-rows", type=int, default=0, help="Also time the text cache on N random rows.")
    parser.add_argument("--start-rows", type=int, default=0, help="Also time the ID text start on N random rows.")
    args = parser.parse_args()
    if args.cache_rows:
        time_cache(args.cache_rows)
    if args.start_rows:
        time_text_start(args.start_rows)
    if args.limit <= 0:
        return

    products = validate_products(read_table(args.products, "products"), args.products, IngestReport())
    texts = product_texts(products.head(args.limit), FeaturesConfig().description_chars)
    path, model_id = resolve_text_model(FeaturesConfig().text_model)
    print(f"{len(texts)} products from {args.products}, {sum(map(len, texts)) / len(texts):.0f} chars per text, "
          f"torch threads {torch.get_num_threads()}, os.cpu_count {os.cpu_count()}")
    header = f"{'precision':>9} {'max_tokens':>10} {'products/s':>10} {'ratio':>6} {'per CPU-s':>9} {'cos mean':>8} " \
             f"{'cos min':>8} {'top-10 overlap':>14} {'load avg':>8}"
    print(header)
    reference = reference_neighbours = baseline = None
    settings = SETTINGS if args.settings is None else [SETTINGS[0]] + [
        (precision, int(tokens) or None) for precision, tokens in (part.split(":") for part in args.settings.split(","))
    ]
    for precision, max_tokens in settings:
        encoder = SentenceTransformerEncoder(path, model_id, args.batch_size, "cpu", precision, max_tokens)
        encoder.encode(texts[: args.batch_size])  # warm-up: first-call allocations
        start, start_cpu = time.perf_counter(), time.process_time()
        emb = encoder.encode(texts)
        speed = len(texts) / (time.perf_counter() - start)
        per_cpu_second = len(texts) / (time.process_time() - start_cpu)
        if reference is None:
            reference, reference_neighbours, baseline = emb, neighbours(emb), speed
        cos = (emb * reference).sum(dim=1)
        overlap = neighbour_overlap(neighbours(emb), reference_neighbours)
        print(f"{precision:>9} {str(max_tokens or 'model'):>10} {speed:>10.1f} {speed / baseline:>6.2f} "
              f"{per_cpu_second:>9.1f} {float(cos.mean()):>8.4f} {float(cos.min()):>8.4f} {overlap:>14.3f} "
              f"{os.getloadavg()[0]:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
