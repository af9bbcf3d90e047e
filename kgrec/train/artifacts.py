"""A trained model on disk: everything ranking needs, written atomically.

Layout of a model directory::

    embeddings.safetensors   user, product, brand, category embeddings (L2-normalised),
                             product_text (when text was used), user_encoder.* (the
                             transformer user encoder's weights, with user_encoder: transformer)
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
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml
from torch import Tensor

from kgrec.atomic import replace_dir
from kgrec.errors import ConfigError, ModelNotFoundError, TrainingError
from kgrec.models.co_interaction import CoInteractions
from kgrec.models.ensemble import EncoderEnsemble, unit_members
from kgrec.models.history import Histories, history_embedding
from kgrec.snapshot.idmap import IdMap, read_id_maps, write_id_maps
from kgrec.train.recommender import Recommender, known_users

EMBEDDINGS_FILE = "embeddings.safetensors"
CONFIG_FILE = "config.yaml"
SEED_FILE = "seed"
HASH_FILE = "snapshot_hash"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CURVES_FILE = "curves.png"
IDS_DIR = "ids"
ENCODER_PREFIX = "user_encoder."
CO_INTERACTION_PREFIX = "co_interaction."
LATEST = "latest"
NODE_TYPES = ("user", "product", "brand", "category")
REQUIRED_FILES = (EMBEDDINGS_FILE, CONFIG_FILE, SEED_FILE, HASH_FILE, METRICS_FILE) + tuple(
    f"{IDS_DIR}/{t}.parquet" for t in NODE_TYPES
)


class KgrecRecommender(Recommender):
    """kgrec behind the recommender contract: fitted by training, or loaded from a model directory.

    Unfitted, it holds the run config; :meth:`fit` trains the graph model
    (:mod:`kgrec.train.loop`) and keeps its final embeddings, which is all ranking needs.
    Embeddings are L2-normalised and on the CPU.

    A user's vector always comes from their current events (:meth:`user_vectors`) by
    the trained rule, ``model.user_mode``:

    - ``history``: the recency-weighted mean of their latest ``model.history_length``
      product embeddings (:func:`~kgrec.models.history.history_embedding`);
    - ``id``: the propagated user embedding of training (events after training only
      change which products are excluded); a user unknown to the model gets the history rule;
    - ``hybrid``: ``history_weight``·history + (1 - ``history_weight``)·id.

    With ``model.user_encoder: transformer`` the history rule is the trained causal
    transformer (:class:`~kgrec.models.sequence.SequenceUserEncoder`) over the latest
    ``model.sequence_length`` events, run on the events given at every call.

    Attributes:
        user_embedding: ``[num_users, dim]`` the users of the fit (id mode; written to Neo4j).
        product_embedding: ``[num_products, dim]``; brand_embedding ``[num_brands, dim]``;
            category_embedding ``[num_categories, dim]``.
        product_text: ``[num_products, text_dim]`` or None.
        user_encoder: the trained transformer user encoder (eval mode, CPU), or None.
        user_ids, product_ids, brand_ids, category_ids: the id maps (index = row).
        config: the resolved run config as a plain dict.
        history: the training records (loss and valid NDCG@10 per epoch, best epoch).
    """

    name = "kgrec"
    trainable = True

    def __init__(self, config: Any, seed: int = 42, epochs: int | None = None, progress: bool = False) -> None:
        self.config: dict[str, Any] = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
        self.seed = int(seed)
        self.epochs = epochs
        self.progress = progress
        self.path: Path | None = None
        self.snapshot_hash = ""
        self.metrics: dict[str, Any] = {}
        self.history: dict[str, Any] = {}
        self.user_embedding: Tensor | None = None
        self._product_embedding: Tensor | None = None
        self.brand_embedding: Tensor | None = None
        self.category_embedding: Tensor | None = None
        self.product_text: Tensor | None = None
        self.user_encoder: Any = None
        self._one_member: EncoderEnsemble | None = None  # a single user_encoder wrapped (_encoders)
        self.co_interactions: CoInteractions | None = None
        self.user_ids: IdMap | None = None
        self.product_ids: IdMap | None = None
        self.brand_ids: IdMap | None = None
        self.category_ids: IdMap | None = None

    # --- the contract ---------------------------------------------------------------

    def fit(self, split: Any, snapshot: Any = None, device: str | None = None) -> KgrecRecommender:
        """Train on ``split.train`` over ``snapshot``'s graph; early stopping on valid NDCG@10
        unless ``epochs`` was given (then exactly that many epochs)."""
        from kgrec.train.loop import train_model

        if snapshot is None:
            raise TrainingError("kgrec trains over the knowledge graph: pass the snapshot to fit().")
        from kgrec.config import KgrecConfig

        cfg = KgrecConfig.model_validate(self.config)
        if device is not None:
            cfg.train.device = device  # type: ignore[assignment]
        from kgrec.ingest.tables import EVENT_TYPES

        event_weight = torch.tensor([cfg.ingest.weight_of(e) for e in EVENT_TYPES])
        size = cfg.model.ensemble_size
        records: list[dict[str, Any]] = []
        texts: list[Tensor | None] = []

        def members():
            # One member at a time: each is reduced to its vectors before the next trains.
            for m in range(size):
                model, product_text, run = train_model(
                    snapshot, split, cfg.model, cfg.train, cfg.features, self.seed + m, self.progress, self.epochs,
                    event_weight, label="train" if size == 1 else f"train {m + 1}/{size}",
                )
                records.append(run)
                texts.append(product_text)
                yield model
                del model

        self.set_state(members())
        if cfg.model.co_interaction_neighbours > 0:
            # Each user's latest sequence_length products: the pairs counted grow with users × that
            # squared, not with the square of a heavy user's whole history. The same limit on the
            # products each product reaches bounds a request's work by its history, not the catalog.
            pairs = split.train.latest(cfg.model.sequence_length)
            neighbours = cfg.model.co_interaction_neighbours
            self.co_interactions = CoInteractions.fit(
                pairs.matrix(split.num_users, split.num_products), neighbours, reach=neighbours
            )
        self.product_text = None if texts[0] is None else texts[0].detach().cpu()
        self.snapshot_hash = snapshot.content_hash
        self.user_ids, self.product_ids = snapshot.user_ids, snapshot.product_ids
        self.brand_ids, self.category_ids = snapshot.brand_ids, snapshot.category_ids
        self.history = records[0] if size == 1 else self._ensemble_history(records, split, cfg.train.eval_users)
        if size == 1 and self.co_interaction_weight and len(split.valid):
            # The loop chose the epoch by the cosine alone; the figures reported are the model's own score.
            from kgrec.train.evaluate import evaluate

            self.history = {**self.history, "valid": evaluate(self, split, "valid", ks=(10, 20), max_users=cfg.train.eval_users)}
        return self

    def _ensemble_history(self, members: list[dict[str, Any]], split: Any, eval_users: int | None) -> dict[str, Any]:
        """One history for the ensemble: the first member's epochs (for the curves' x axis and
        tools that read one run), every member's records under ``members``, and the ensemble's
        own epoch count and valid figures.

        Each member early-stops on its own; the ensemble keeps the rounded mean of their kept
        epochs, so the refits train every member for the same count."""
        from kgrec.train.evaluate import evaluate

        best_epoch = round(sum(r["best_epoch"] for r in members) / len(members))
        valid = evaluate(self, split, "valid", ks=(10, 20), max_users=eval_users) if len(split.valid) else {}
        return {
            **members[0],
            "best_epoch": best_epoch,
            "valid": valid,
            "seconds": sum(r.get("seconds", 0.0) for r in members),
            "members": members,
        }

    @property
    def product_embedding(self) -> Tensor | None:
        return self._product_embedding

    @product_embedding.setter
    def product_embedding(self, value: Tensor) -> None:
        self._product_embedding = value

    @property
    def best_epoch(self) -> int:
        return int(self.history.get("best_epoch", 0))

    @property
    def best_valid_ndcg(self) -> float | None:
        return self.valid_metrics.get("ndcg@10")

    @property
    def valid_metrics(self) -> dict[str, float]:
        """The evaluator's valid figures at the kept epoch ({} without a valid part)."""
        return dict(self.history.get("valid", {}))

    def user_vectors(self, histories: Histories) -> Tensor:
        """``[b, dim]`` unit vectors of the users from their events (see the class docstring)."""
        self._check_fitted("_product_embedding")
        model = self.config.get("model", {})
        mode = model.get("user_mode", "history")
        members = self.ensemble_size
        if self.user_encoder is not None:
            length = self.user_encoder.max_length
            index, weight = histories.latest(length, 1.0)
            timestamp = histories.latest_timestamps(length) if self.user_encoder.time_gaps else None
            with torch.no_grad():
                vectors = self._encoders().user_vectors(self.product_embedding, index, weight, timestamp)
            return unit_members(vectors, members)
        index, weight = histories.latest(int(model.get("history_length", 20)), float(model.get("recency_decay", 0.7)))
        vectors = unit_members(history_embedding(self.product_embedding, index, weight), members)
        if mode == "history" or self.user_embedding is None:
            return vectors
        rows, users = known_users(histories, self.user_embedding.shape[0])
        trained = unit_members(self.user_embedding[users], members)
        if mode == "id":
            vectors[rows] = trained
        else:
            share = float(model.get("history_weight", 0.8))
            vectors[rows] = unit_members(share * vectors[rows] + (1 - share) * trained, members)
        return vectors

    def _encoders(self) -> EncoderEnsemble:
        """:attr:`user_encoder` as an ensemble, of one member for a single model: either way its
        members run stacked in numpy for inference (:class:`~kgrec.models.ensemble.StackedEncoders`)."""
        if isinstance(self.user_encoder, EncoderEnsemble):
            return self.user_encoder
        if self._one_member is None or self._one_member.members[0] is not self.user_encoder:
            self._one_member = EncoderEnsemble([self.user_encoder]).eval()
        return self._one_member

    def rank_with(self, config: Any) -> Any:
        """``config`` (a command's :class:`~kgrec.config.KgrecConfig`) with this model's own rank
        settings wherever the command sets none (:func:`~kgrec.config.with_model_rank`). The
        result's rank section becomes the model's too, so its score reads the command's
        ``rank.co_interaction_weight``."""
        from kgrec.config import with_model_rank

        resolved = with_model_rank(config, self.config)
        self.config["rank"] = resolved.rank.model_dump(mode="json")
        return resolved

    @property
    def co_interaction_weight(self) -> float:
        """``rank.co_interaction_weight`` of :attr:`config` when the model holds co-interactions,
        else 0. A ranking command puts its own rank settings there (:meth:`rank_with`), so the
        weight is a ranking knob."""
        if self.co_interactions is None:
            return 0.0
        from kgrec.rank.config import RankConfig

        rank = self.config.get("rank") or {}
        return float(rank.get("co_interaction_weight", RankConfig().co_interaction_weight))

    def score(self, histories: Histories) -> Tensor:
        """``[b, P]``: the cosine of the user and product vectors, plus ``rank.co_interaction_weight``
        times the co-interaction scores of the users' current products (:mod:`kgrec.models.co_interaction`)."""
        scores = super().score(histories)
        weight = self.co_interaction_weight
        if weight:
            assert self.co_interactions is not None
            row, product, value = self.co_interactions.entries(histories)
            scores[row.to(scores.device), product.to(scores.device)] += weight * value.to(scores)
        return scores

    def add_co_interactions(self, candidates: Any, histories: Histories, user_vectors: Tensor, limit: int) -> Any:
        """Retrieved ``candidates`` (:class:`~kgrec.rank.retrieval.Candidates`, found by the vectors
        alone) scored as :meth:`score` scores every product: each user's ``limit`` products with the
        most co-interaction weight join the candidates, and every candidate's relevance is its cosine
        to ``user_vectors`` plus the co-interaction term. The catalog's highest relevance grows to at
        least the best candidate's (docs/RANKING.md)."""
        weight = self.co_interaction_weight
        if not weight:
            return candidates
        assert self.co_interactions is not None and self.product_embedding is not None
        from kgrec.rank.retrieval import unique_per_row

        entries = self.co_interactions.entries(histories)  # once: both the joined products and their scores
        index = unique_per_row(torch.cat([candidates.product_index, self.co_interactions.top(entries, histories, limit)], dim=1))
        # None the user has: ranking skips them, and their scores must not set the scale.
        width = int(self.product_embedding.shape[0]) + 1
        rows = torch.arange(index.shape[0]).unsqueeze(1)
        seen = torch.isin(rows * width + index, histories.row_of_entry * width + histories.product_index)
        index = index.masked_fill(seen, -1)
        cosine = torch.bmm(self.product_embedding[index.clamp(min=0)], user_vectors.float().unsqueeze(2)).squeeze(2)
        relevance = cosine + weight * self.co_interactions.scores_at(entries, index).to(cosine)
        relevance = relevance.masked_fill(index < 0, -torch.inf)
        best = relevance.max(dim=1).values
        return type(candidates)(index, relevance, candidates.lowest, torch.maximum(candidates.highest, best))

    @property
    def ensemble_size(self) -> int:
        """How many members' vectors the embeddings hold side by side (:mod:`kgrec.models.ensemble`):
        their width over one member's ``model.dim``. Read from the vectors, not the config, so one
        member of an ensemble, scored on its own while it trains, is a one-member model."""
        self._check_fitted("_product_embedding")
        width = int(self.product_embedding.shape[1])
        return max(width // int(self.config.get("model", {}).get("dim", width)), 1)

    # --- state ------------------------------------------------------------------------

    def set_state(self, members: Iterable[Any]) -> None:
        """Keep the final embeddings (and user encoder) of trained
        :class:`~kgrec.models.kgrec_model.KgrecModel` s: one, or an ensemble's members side by
        side (:mod:`kgrec.models.ensemble`). Each model is released once its vectors are kept."""
        import copy

        parts: dict[str, list[Tensor]] = {"user": [], "product": [], "brand": [], "category": []}
        encoders = []
        for model in members:  # a generator trains the next member here, so no_grad only inside
            model.eval()
            with torch.no_grad():
                nodes = model.propagate()
                users, products = model.get_embedding(nodes)
            for name, vectors in zip(parts, (users, products, nodes["brand"], nodes["category"])):
                parts[name].append(vectors.detach().cpu())
            if getattr(model, "user_encoder", None) is not None:
                encoders.append(copy.deepcopy(model.user_encoder).cpu().eval())
            del model  # so a generator's next member trains without this one in memory
        size = len(parts["product"])
        joined = {name: unit_members(torch.cat(p, dim=-1), size) for name, p in parts.items()}
        self.user_embedding, self._product_embedding = joined["user"], joined["product"]
        self.brand_embedding, self.category_embedding = joined["brand"], joined["category"]
        self.user_encoder = None if not encoders else encoders[0] if len(encoders) == 1 else EncoderEnsemble(encoders).eval()

    def with_products(self, product_ids: IdMap, embedding: Tensor, text: Tensor | None) -> KgrecRecommender:
        """A copy that also ranks products placed after training (rows appended)."""
        import copy

        out = copy.copy(self)
        out.product_ids = product_ids
        out._product_embedding = torch.cat([self.product_embedding, embedding])
        if self.product_text is not None and text is not None:
            out.product_text = torch.cat([self.product_text, text.to(self.product_text)])
        return out


def check_model_out(out_dir: str | Path) -> Path:
    """Refuse an ``out_dir`` that kgrec must not replace, before any training starts.

    ``out_dir`` may be new, empty, or an earlier kgrec model directory (replaced as a
    whole); anything else holds the user's files and is refused. Its parent must be
    writable.

    Raises:
        ConfigError: naming the folder, what is in it and the fix.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder. Pass a new or empty folder for the model.")
    if out.is_dir() and any(out.iterdir()) and not is_model_dir(out):
        found = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise ConfigError(
            f"--out {out} is not empty and is not a kgrec model directory (it holds {found}…); kgrec will not "
            "replace it. Pass a new or empty folder, or an earlier model directory to replace."
        )
    parent = out.parent if not out.exists() else out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, so no folder can be made below it. Pass another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {parent} is not writable. Pass a folder you can write to.")
    return out


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` looks like a model directory that :func:`save_model_dir` wrote."""
    return (path / EMBEDDINGS_FILE).is_file() and (path / CONFIG_FILE).is_file() and (path / IDS_DIR).is_dir()


def save_model_dir(
    model: KgrecRecommender,
    out_dir: str | Path,
    metrics: dict[str, Any],
    update_latest: bool = True,
    snapshot: Any = None,
) -> Path:
    """Write a fitted ``model`` as a model directory at ``out_dir`` (replacing an earlier one).

    Args:
        model: fitted (:meth:`KgrecRecommender.fit`).
        metrics: any JSON-able metrics (valid/test NDCG, which fit is deployed, ...).
        update_latest: point ``<parent>/latest`` at the new directory.
        snapshot: the snapshot it was trained on, copied in so the directory stands alone.

    Returns:
        The model directory.
    """
    from safetensors.torch import save_file

    out = check_model_out(out_dir)
    if model.product_embedding is None or model.user_ids is None:
        raise TrainingError("save_model_dir needs a fitted model; call fit() first.")
    maps = {"user": model.user_ids, "product": model.product_ids, "brand": model.brand_ids, "category": model.category_ids}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tensors = {
            "user_embedding": model.user_embedding,
            "product_embedding": model.product_embedding,
            "brand_embedding": model.brand_embedding,
            "category_embedding": model.category_embedding,
        }
        if model.product_text is not None:
            tensors["product_text"] = model.product_text
        if model.user_encoder is not None:
            tensors.update({f"{ENCODER_PREFIX}{k}": v for k, v in model.user_encoder.state_dict().items()})
        if model.co_interactions is not None:
            tensors.update({f"{CO_INTERACTION_PREFIX}{k}": v for k, v in model.co_interactions.state().items()})
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / EMBEDDINGS_FILE))
        write_id_maps(maps, staging / IDS_DIR)  # type: ignore[arg-type]
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(model.config, sort_keys=False), encoding="utf-8")
        (staging / SEED_FILE).write_text(f"{model.seed}\n", encoding="utf-8")
        (staging / HASH_FILE).write_text(f"{model.snapshot_hash}\n", encoding="utf-8")
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float) + "\n", encoding="utf-8")
        (staging / HISTORY_FILE).write_text(json.dumps(model.history, indent=2) + "\n", encoding="utf-8")
        plot_curves(model.history, staging / CURVES_FILE)
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


def plot_curves(history: dict[str, Any], path: Path) -> None:
    """Loss and valid NDCG@10 per epoch, side by side (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = history.get("members") or [history]  # an ensemble draws one curve per member
    best_epoch = history.get("best_epoch", 0)
    fig, (ax_loss, ax_ndcg) = plt.subplots(1, 2, figsize=(9, 3.5))
    evaluated = False
    for m, run in enumerate(runs):
        records = run.get("epochs", [])
        label = f"member {m + 1}" if len(runs) > 1 else None
        ax_loss.plot([r["epoch"] for r in records], [r["loss"] for r in records], marker="o", label=label)
        points = [(r["epoch"], r["valid_ndcg"]) for r in records if r.get("valid_ndcg") is not None]
        if points:
            ax_ndcg.plot([e for e, _ in points], [v for _, v in points], marker="o", label=label)
            evaluated = True
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    if evaluated:
        ax_ndcg.axvline(best_epoch, color="grey", linestyle="--", label=f"kept epoch {best_epoch}")
        ax_ndcg.legend()
    else:
        ax_ndcg.text(0.5, 0.5, "no valid part\n(epochs fixed by the selection run)", ha="center", va="center")
    ax_ndcg.set_xlabel("epoch")
    ax_ndcg.set_ylabel("valid NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def point_latest(model_dir: Path) -> Path:
    """Make ``<parent>/latest`` name ``model_dir`` (atomic symlink swap; a text file as fallback)."""
    parent = model_dir.parent
    link = parent / LATEST
    if link.exists() and not link.is_symlink() and not _is_pointer_file(link):
        raise ConfigError(
            f"{link} exists and is not kgrec's pointer to a model directory; kgrec will not replace it. "
            f"Move it away, or write models into another folder. The model itself is in {model_dir}."
        )
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


def _is_pointer_file(link: Path) -> bool:
    """A one-line file naming a sibling model directory, as :func:`point_latest` writes."""
    if not link.is_file() or link.stat().st_size > 4096:
        return False
    name = link.read_text(encoding="utf-8", errors="replace").strip()
    return bool(name) and "/" not in name and is_model_dir(link.parent / name)


def resolve_model_dir(path: str | Path) -> Path:
    """``path`` itself, or what its ``latest`` pointer names (for a parent dir or the pointer)."""
    p = Path(path)
    if p.is_dir() and not (p / EMBEDDINGS_FILE).exists() and (p / LATEST).exists():
        p = p / LATEST
    if p.is_file() and p.name == LATEST:
        p = p.parent / p.read_text(encoding="utf-8").strip()
    return p.resolve() if p.exists() else p


def load_model_dir(path: str | Path) -> KgrecRecommender:
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
    needed = ("user_embedding", "product_embedding", "brand_embedding", "category_embedding")
    absent = [k for k in needed if k not in tensors]
    if absent:
        raise ModelNotFoundError(f"{root / EMBEDDINGS_FILE} lacks {absent}. {hint}")
    if isinstance(config, dict):  # saved before a key moved: its value goes where this version reads it
        from kgrec.config import move_renamed_keys

        move_renamed_keys(config)
    model_config = config.get("model", {}) if isinstance(config, dict) else {}
    width, size = int(tensors["product_embedding"].shape[1]), int(model_config.get("ensemble_size", 1))
    if width % size:
        raise ModelNotFoundError(
            f"Model directory {root} is inconsistent: {width}-d product embeddings cannot hold the "
            f"{size} ensemble members its config names. {hint}"
        )
    for t in ("user", "product"):
        rows, ids = tensors[f"{t}_embedding"].shape[0], len(maps[t])
        if rows != ids:
            raise ModelNotFoundError(
                f"Model directory {root} is inconsistent: {rows} {t} embeddings but {ids} {t} ids. {hint}"
            )
    model = KgrecRecommender(config if isinstance(config, dict) else {}, seed=seed)
    model.path = root
    model.user_embedding = tensors["user_embedding"]
    model.product_embedding = tensors["product_embedding"]
    model.brand_embedding = tensors["brand_embedding"]
    model.category_embedding = tensors["category_embedding"]
    model.product_text = tensors.get("product_text")
    model.user_encoder = _load_user_encoder(tensors, model.config, root, hint)
    co_state = {k[len(CO_INTERACTION_PREFIX):]: v for k, v in tensors.items() if k.startswith(CO_INTERACTION_PREFIX)}
    if co_state:
        model.co_interactions = CoInteractions.from_state(co_state)
        if model.co_interactions.num_products != model.product_embedding.shape[0]:
            raise ModelNotFoundError(
                f"Model directory {root} is inconsistent: its co-interactions cover "
                f"{model.co_interactions.num_products} products, its embeddings {model.product_embedding.shape[0]}. {hint}"
            )
    model.user_ids, model.product_ids = maps["user"], maps["product"]
    model.brand_ids, model.category_ids = maps["brand"], maps["category"]
    model.snapshot_hash, model.metrics, model.history = snapshot_hash, metrics, history
    return model


def _load_user_encoder(tensors: dict[str, Tensor], config: dict[str, Any], root: Path, hint: str) -> Any:
    """The transformer user encoder saved under ``user_encoder.*``, or None for the mean rule.

    Only torch is imported (:mod:`kgrec.models.sequence`), so loading stays fast."""
    state = {k[len(ENCODER_PREFIX):]: v for k, v in tensors.items() if k.startswith(ENCODER_PREFIX)}
    model = config.get("model", {}) if isinstance(config, dict) else {}
    if model.get("user_encoder", "mean") != "transformer" or model.get("user_mode", "history") != "history":
        return None
    if not state:
        raise ModelNotFoundError(
            f"{root / EMBEDDINGS_FILE} lacks the transformer user encoder (user_encoder.*) that its config "
            f"names. {hint}"
        )
    from kgrec.models.sequence import SequenceUserEncoder

    size = int(model.get("ensemble_size", 1))
    dim = int(tensors["product_embedding"].shape[1]) // size
    # An ensemble's encoder state is its members' under ``members.<m>.``.
    states = [state] if size == 1 else [
        {k[len(f"members.{m}."):]: v for k, v in state.items() if k.startswith(f"members.{m}.")} for m in range(size)
    ]
    encoders = []
    for member in states:
        encoder = SequenceUserEncoder(
            dim,
            int(model.get("sequence_length", 50)),
            member.get("event_weight", torch.zeros(0)),
            int(model.get("encoder_blocks", 2)),
            int(model.get("encoder_heads", 1)),
            float(model.get("encoder_dropout", 0.2)),
            time_gaps="gap.weight" in member,
            block=SequenceUserEncoder.block_of(member),
        )
        try:
            encoder.load_state_dict(member)
        except RuntimeError as e:
            raise ModelNotFoundError(
                f"{root / EMBEDDINGS_FILE}: the user encoder does not match its config ({e}). {hint}"
            ) from e
        encoders.append(encoder.eval())
    return encoders[0] if size == 1 else EncoderEnsemble(encoders).eval()
