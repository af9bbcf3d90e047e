"""A trained model on disk: everything ranking needs, written atomically.

Layout of a model directory::

    embeddings.safetensors   user, product, brand, category embeddings (L2-normalised),
                             product_text (when text was used), history_index/_weight
    ids/{user,product,brand,category}.parquet   one column ``id``; row = index
    config.yaml              the resolved run config
    seed                     the seed, as text
    snapshot_hash            content hash of the snapshot it was trained on
    metrics.json             metrics passed by the caller (e.g. valid / test NDCG)
    history.json             loss and valid NDCG@10 per epoch, best epoch
    curves.png               the same as a plot

The directory is written under a temporary name beside ``out_dir`` and renamed into
place, so it is never half-written. A ``latest`` pointer in the parent (a symlink, or a
one-line file where symlinks are not possible) names the newest model directory;
:func:`load_model_dir` follows it when given the parent or the pointer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import Tensor

from kgrec.atomic import replace_dir
from kgrec.errors import ModelNotFoundError
from kgrec.models.history import user_embedding_from_history
from kgrec.snapshot.idmap import IdMap, read_id_maps, write_id_maps

if TYPE_CHECKING:
    from kgrec.train.loop import TrainResult

EMBEDDINGS_FILE = "embeddings.safetensors"
CONFIG_FILE = "config.yaml"
SEED_FILE = "seed"
HASH_FILE = "snapshot_hash"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"
IDS_DIR = "ids"
LATEST = "latest"
NODE_TYPES = ("user", "product", "brand", "category")
REQUIRED_FILES = (EMBEDDINGS_FILE, CONFIG_FILE, SEED_FILE, HASH_FILE, METRICS_FILE) + tuple(
    f"{IDS_DIR}/{t}.parquet" for t in NODE_TYPES
)


@dataclass
class TrainedModel:
    """A model directory loaded back. Embeddings are L2-normalised, on the CPU.

    Attributes:
        user_embedding: ``[num_users, dim]``; product_embedding ``[num_products, dim]``;
            brand_embedding ``[num_brands, dim]``; category_embedding ``[num_categories, dim]``.
        product_text: ``[num_products, text_dim]`` or None.
        history_index, history_weight: ``[num_users, L]`` the histories behind ``user_embedding``.
        user_ids, product_ids, brand_ids, category_ids: the id maps (index = row).
        config: the resolved run config as a plain dict (``config["model"]["recency_decay"]``, ...).
    """

    path: Path
    user_embedding: Tensor
    product_embedding: Tensor
    brand_embedding: Tensor
    category_embedding: Tensor
    product_text: Tensor | None
    history_index: Tensor
    history_weight: Tensor
    user_ids: IdMap
    product_ids: IdMap
    brand_ids: IdMap
    category_ids: IdMap
    config: dict[str, Any]
    seed: int
    snapshot_hash: str
    metrics: dict[str, Any]
    history: dict[str, Any] = field(default_factory=dict)

    def score(self, user_index: Tensor) -> Tensor:
        """``[b, num_products]`` cosine scores of the users in ``user_index``."""
        return self.user_embedding[user_index] @ self.product_embedding.t()

    def user_vector(self, product_index: Tensor, weights: Tensor | None = None) -> Tensor:
        """``[dim]`` a user's vector from their products (oldest first), for real-time updates.

        Uses the trained rule (recency decay, history length) from the saved config.
        """
        model = self.config.get("model", {})
        vec = user_embedding_from_history(
            self.product_embedding,
            product_index,
            weights,
            decay=float(model.get("recency_decay", 0.7)),
            history_length=int(model.get("history_length", 20)),
        )
        return torch.nn.functional.normalize(vec, dim=-1)


def save_model_dir(
    result: TrainResult,
    out_dir: str | Path,
    config: Any,
    seed: int,
    snapshot_hash: str,
    metrics: dict[str, Any],
    id_maps: dict[str, IdMap] | None = None,
    update_latest: bool = True,
    snapshot: Any = None,
) -> Path:
    """Write ``result`` as a model directory at ``out_dir`` (replacing an earlier one).

    Args:
        result: from :func:`kgrec.train.loop.train_model`.
        config: the resolved run config (a pydantic model, e.g. ``KgrecConfig``, or a dict).
        seed, snapshot_hash: stored beside the weights.
        metrics: any JSON-able metrics (valid/test NDCG, ...).
        id_maps: ``{"user": IdMap, "product": ..., "brand": ..., "category": ...}``
            (default: ``result.extra["id_maps"]``, set by ``train_model``).
        update_latest: point ``<parent>/latest`` at the new directory.

    Returns:
        The model directory.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    maps = id_maps or result.extra.get("id_maps")
    if not maps or any(t not in maps for t in NODE_TYPES):
        raise ValueError(f"save_model_dir needs id maps for {list(NODE_TYPES)}; pass id_maps=... from the snapshot.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tensors = {
            "user_embedding": result.user_embedding,
            "product_embedding": result.product_embedding,
            "brand_embedding": result.brand_embedding,
            "category_embedding": result.category_embedding,
            "history_index": result.history_index,
            "history_weight": result.history_weight,
        }
        if result.product_text is not None:
            tensors["product_text"] = result.product_text
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / EMBEDDINGS_FILE))
        write_id_maps({t: maps[t] for t in NODE_TYPES}, staging / IDS_DIR)
        data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        (staging / SEED_FILE).write_text(f"{int(seed)}\n", encoding="utf-8")
        (staging / HASH_FILE).write_text(f"{snapshot_hash}\n", encoding="utf-8")
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float) + "\n", encoding="utf-8")
        history = {
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            "epochs": [asdict(r) for r in result.history],
        }
        (staging / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
        plot_curves(result, staging / CURVES_FILE)
        if snapshot is not None:
            # The model directory carries its graph, so evaluate and recommend need nothing else.
            from kgrec.snapshot.snapshot import write_snapshot

            write_snapshot(snapshot.tables, staging / "snapshot")
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if update_latest:
        point_latest(out)
    return out


def plot_curves(result: TrainResult, path: Path) -> None:
    """Loss and valid NDCG@10 per epoch, side by side (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in result.history]
    fig, (ax_loss, ax_ndcg) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [r.loss for r in result.history], marker="o")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    evaluated = [(r.epoch, r.valid_ndcg) for r in result.history if r.valid_ndcg is not None]
    if evaluated:
        ax_ndcg.plot([e for e, _ in evaluated], [v for _, v in evaluated], marker="o", color="tab:green")
        ax_ndcg.axvline(result.best_epoch, color="grey", linestyle="--", label=f"best epoch {result.best_epoch}")
        ax_ndcg.legend()
    else:
        ax_ndcg.text(0.5, 0.5, "no valid part\n(trained on train + valid)", ha="center", va="center")
    ax_ndcg.set_xlabel("epoch")
    ax_ndcg.set_ylabel("valid NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def point_latest(model_dir: Path) -> Path:
    """Make ``<parent>/latest`` name ``model_dir`` (atomic symlink swap; a text file as fallback)."""
    parent = model_dir.parent
    link = parent / LATEST
    tmp = parent / f".{LATEST}.tmp-{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(model_dir.name, tmp)
        os.replace(tmp, link)
    except OSError:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        if link.is_dir() and not link.is_symlink():
            raise
        tmp.write_text(model_dir.name + "\n", encoding="utf-8")
        os.replace(tmp, link)
    return link


def resolve_model_dir(path: str | Path) -> Path:
    """``path`` itself, or what its ``latest`` pointer names (for a parent dir or the pointer)."""
    p = Path(path)
    if p.is_dir() and not (p / EMBEDDINGS_FILE).exists() and (p / LATEST).exists():
        p = p / LATEST
    if p.is_file() and p.name == LATEST:
        p = p.parent / p.read_text(encoding="utf-8").strip()
    return p.resolve() if p.exists() else p


def load_model_dir(path: str | Path) -> TrainedModel:
    """Read a model directory written by :func:`save_model_dir`.

    ``path`` may be the model directory, its parent (the ``latest`` one is taken) or
    the ``latest`` pointer itself.

    Raises:
        ModelNotFoundError: nothing there, or a required file is missing or unreadable.
    """
    from safetensors.torch import load_file

    root = resolve_model_dir(path)
    hint = "Train one with `kgrec train`, or pass an existing model directory with --model."
    if not root.is_dir():
        raise ModelNotFoundError(f"No trained model at {path}: the directory does not exist. {hint}")
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"Model directory {root} is incomplete (missing {', '.join(missing)}); it was not written by "
            f"kgrec train or was damaged. {hint}"
        )
    try:
        tensors = load_file(str(root / EMBEDDINGS_FILE))
        maps = read_id_maps(root / IDS_DIR)
        config = yaml.safe_load((root / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        seed = int((root / SEED_FILE).read_text(encoding="utf-8").strip())
        snapshot_hash = (root / HASH_FILE).read_text(encoding="utf-8").strip()
        metrics = json.loads((root / METRICS_FILE).read_text(encoding="utf-8"))
        history = json.loads((root / HISTORY_FILE).read_text(encoding="utf-8")) if (root / HISTORY_FILE).is_file() else {}
    except ModelNotFoundError:
        raise
    except Exception as e:  # safetensors, parquet, yaml and json raise many types
        raise ModelNotFoundError(f"Model directory {root} cannot be read ({e}). {hint}") from e
    needed = ("user_embedding", "product_embedding", "brand_embedding", "category_embedding", "history_index", "history_weight")
    absent = [k for k in needed if k not in tensors]
    if absent:
        raise ModelNotFoundError(f"{root / EMBEDDINGS_FILE} lacks {absent}. {hint}")
    for t in ("user", "product"):
        rows, ids = tensors[f"{t}_embedding"].shape[0], len(maps[t])
        if rows != ids:
            raise ModelNotFoundError(
                f"Model directory {root} is inconsistent: {rows} {t} embeddings but {ids} {t} ids. {hint}"
            )
    return TrainedModel(
        path=root,
        user_embedding=tensors["user_embedding"],
        product_embedding=tensors["product_embedding"],
        brand_embedding=tensors["brand_embedding"],
        category_embedding=tensors["category_embedding"],
        product_text=tensors.get("product_text"),
        history_index=tensors["history_index"],
        history_weight=tensors["history_weight"],
        user_ids=maps["user"],
        product_ids=maps["product"],
        brand_ids=maps["brand"],
        category_ids=maps["category"],
        config=config if isinstance(config, dict) else {},
        seed=seed,
        snapshot_hash=snapshot_hash,
        metrics=metrics,
        history=history,
    )

