"""The run configuration: one YAML file, typed sections, dotted overrides.

Each stage owns its section's model (``kgrec/<stage>/config.py``); this module only
assembles them, loads YAML, applies ``--set section.key=value`` overrides and turns
pydantic's errors into one :class:`~kgrec.errors.ConfigError` that names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from kgrec.errors import ConfigError
from kgrec.features.config import FeaturesConfig
from kgrec.ingest.config import IngestConfig
from kgrec.models.config import ModelConfig
from kgrec.rank.config import RankConfig, SearchConfig
from kgrec.store.config import StoreConfig
from kgrec.train.config import TrainConfig


class KgrecConfig(BaseModel):
    """Every section of a run. Unknown keys are rejected, at every level."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    store: StoreConfig = StoreConfig()
    ingest: IngestConfig = IngestConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    rank: RankConfig = RankConfig()
    search: SearchConfig = SearchConfig()


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` → ``(["train", "lr"], 3e-4)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"Override {text!r} is not of the form section.key=value "
            "(for example --set train.lr=0.001)."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"Override {'.'.join(path)}: {part!r} is a value, not a section.")
        node = child
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> KgrecConfig:
    """Load ``path`` (default: the built-in defaults) and apply ``overrides``.

    ``configs/default.yaml`` spells the built-in defaults out with comments; a test
    keeps the two equal.
    """
    source = Path(path) if path is not None else Path("<defaults>")
    data: Any = {}
    if path is not None:
        if not source.is_file():
            raise ConfigError(
                f"Config file {source} does not exist. Pass an existing YAML file, e.g. configs/default.yaml."
            )
        try:
            data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {source} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {source} must hold a mapping of sections, found {type(data).__name__}.")
    for text in overrides:
        keys, value = parse_override(text)
        _apply(data, keys, value)
    try:
        return KgrecConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe_validation_error(e, source)) from e


# Keys that moved to another section: an old command or file is told the new place, and a
# model directory saved with the old key loads with its value there (move_renamed_keys).
MOVED_KEYS = {"model.co_interaction_weight": "rank.co_interaction_weight"}


def move_renamed_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a nested config dict, e.g. a saved model's ``config.yaml``) with the value of
    every old key of :data:`MOVED_KEYS` moved to its new place; a value already there is kept."""
    for old, new in MOVED_KEYS.items():
        *old_sections, old_name = old.split(".")
        source: Any = data
        for section in old_sections:
            source = source.get(section) if isinstance(source, dict) else None
        if not isinstance(source, dict) or old_name not in source:
            continue
        value = source.pop(old_name)
        *new_sections, new_name = new.split(".")
        target = data
        for section in new_sections:
            target = target.setdefault(section, {})
        target.setdefault(new_name, value)
    return data


def _describe_validation_error(error: ValidationError, source: Path) -> str:
    lines = [f"Config {source} has {error.error_count()} problem(s):"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden" and key in MOVED_KEYS:
            new = MOVED_KEYS[key]
            lines.append(f"  - {key!r} is now {new!r} (in {new.rsplit('.', 1)[0]}); use that key instead")
        elif item["type"] == "extra_forbidden":
            section = ".".join(str(p) for p in item["loc"][:-1]) or "top level"
            lines.append(f"  - unknown key {key!r} (in {section}); check the spelling against configs/default.yaml")
        else:
            lines.append(f"  - {key}: {item['msg']} (found {item.get('input')!r})")
    return "\n".join(lines)


def with_model_rank(config: KgrecConfig, trained: dict[str, Any]) -> KgrecConfig:
    """``config`` with a model's own rank settings wherever ``config`` sets none.

    ``trained`` is the config the model was trained with (its directory's ``config.yaml``).
    A model trained with ``--config configs/accurate.yaml`` is ranked with that file's
    ``rank`` section (retrieval chosen for its 256-wide vectors) even when ``kgrec recommend``
    or ``kgrec serve`` gets no config: a key the command's file or ``--set`` names wins, key
    by key; the built-in defaults fill only what neither sets. A saved setting this version
    does not know is ignored, and one it rejects leaves the command's rank section as it is.
    """
    saved = trained.get("rank")
    if not isinstance(saved, dict):
        return config
    known = {key: value for key, value in saved.items() if key in RankConfig.model_fields}
    try:
        rank = RankConfig.model_validate(_merged(known, config.rank.model_dump(exclude_unset=True)))
    except ValidationError:
        return config
    return config.model_copy(update={"rank": rank})


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s values over it, nested sections merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = _merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def save_config(config: KgrecConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (kept beside every model artifact)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")


def render_config_yaml(config: BaseModel | None = None, header: str = "") -> str:
    """``config`` (default: the built-in defaults) as commented YAML.

    Each key gets its field's description as a comment, so ``configs/default.yaml``
    is generated from the models and cannot drift from them.
    """
    config = config if config is not None else KgrecConfig()
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _render_model(config, lines, indent="")
    return "\n".join(lines) + "\n"


def _render_model(model: BaseModel, lines: list[str], indent: str) -> None:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append("")
            if field.description or value.__doc__:
                doc = field.description or (value.__doc__ or "").strip().splitlines()[0]
                lines.append(f"{indent}# {doc}")
            lines.append(f"{indent}{name}:")
            _render_model(value, lines, indent + "  ")
            continue
        dumped = yaml.safe_dump({name: _plain(value)}, default_flow_style=True, sort_keys=False, width=10_000).strip()
        dumped = dumped[1:-1] if dumped.startswith("{") else dumped  # flow style wraps the pair in braces
        comment = f"  # {field.description}" if field.description else ""
        lines.append(f"{indent}{dumped}{comment}")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
