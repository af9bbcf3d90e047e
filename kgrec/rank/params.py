"""The ranking's parameters, parsed and checked once.

:class:`Weights` is the one form of ``(relevance, popularity, diversity)``: from the
config or from ``--weights`` / ``?weights=``, always rescaled to sum to 1, so the same
numbers mean the same ranking whichever path they came in by. :class:`RankParams`
bundles everything :func:`kgrec.rank.ranking.rank` needs besides the tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kgrec.errors import ConfigError
from kgrec.rank.config import RankConfig

NormaliseMethod = Literal["minmax", "rank"]
Similarity = Literal["cosine", "dot"]

WEIGHT_NAMES: tuple[str, str, str] = ("relevance", "popularity", "diversity")
WEIGHTS_EXAMPLE = "relevance=0.7,popularity=0.1,diversity=0.2"
MAX_K = 1000


@dataclass(frozen=True)
class Weights:
    """``score = relevance·r + popularity·p + diversity·d``; the three sum to 1."""

    relevance: float
    popularity: float
    diversity: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Weights:
        """Three finite numbers ``>= 0``, not all 0, rescaled to sum to 1.

        Raises:
            ConfigError: naming the bad value.
        """
        numbers = tuple(float(v) for v in values)
        if len(numbers) != 3:
            raise ConfigError(
                f"weights must be 3 numbers ({', '.join(WEIGHT_NAMES)}); found {len(numbers)}: {numbers}. "
                f"E.g. {WEIGHTS_EXAMPLE}."
            )
        for name, value in zip(WEIGHT_NAMES, numbers):
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"weight {name} must be a finite number >= 0; found {value}. E.g. {WEIGHTS_EXAMPLE}.")
        total = sum(numbers)
        if total <= 0:
            raise ConfigError(f"weights {numbers} are all 0; give at least one a positive value. E.g. {WEIGHTS_EXAMPLE}.")
        return cls(*(v / total for v in numbers))

    @classmethod
    def parse(cls, text: str) -> Weights:
        """``"relevance=0.7,popularity=0.1,diversity=0.2"`` → ``Weights(0.7, 0.1, 0.2)``.

        Names are ``relevance``, ``popularity`` and ``diversity`` (any case, any order,
        each at most once); a name left out weighs 0. ``relevance=7,popularity=1,diversity=2``
        means the same as the example.

        Raises:
            ConfigError: an entry is not ``name=value``, a name is unknown or repeated, a
                value is not a finite number >= 0, or every weight is 0.
        """
        hint = f"Allowed names: {', '.join(WEIGHT_NAMES)}; e.g. --weights {WEIGHTS_EXAMPLE}."
        if not text or not text.strip():
            raise ConfigError(f"--weights is empty. {hint}")
        found: dict[str, float] = {}
        for entry in text.split(","):
            name, sep, raw = entry.partition("=")
            name = name.strip().lower()
            if not sep or not name:
                raise ConfigError(f"--weights entry {entry.strip()!r} (in {text!r}) is not of the form name=value. {hint}")
            if name not in WEIGHT_NAMES:
                raise ConfigError(f"--weights has an unknown name {name!r} (in {text!r}). {hint}")
            if name in found:
                raise ConfigError(f"--weights names {name!r} twice (in {text!r}); give each weight once. {hint}")
            try:
                value = float(raw.strip())
            except ValueError:
                raise ConfigError(f"--weights: the value {raw.strip()!r} of {name!r} is not a number. {hint}") from None
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"--weights: {name}={raw.strip()} must be a number >= 0. {hint}")
            found[name] = value
        if sum(found.values()) <= 0:
            raise ConfigError(f"--weights {text!r} makes every weight 0; give at least one a positive value. {hint}")
        return cls.of([found.get(name, 0.0) for name in WEIGHT_NAMES])

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.relevance, self.popularity, self.diversity)

    def to_dict(self) -> dict[str, float]:
        return dict(zip(WEIGHT_NAMES, self.as_tuple()))


@dataclass(frozen=True)
class RankParams:
    """Everything the ranking needs besides the tensors; build with :meth:`from_config`.

    Attributes:
        weights: the three parts' weights.
        k: products per user.
        num_candidates: the pool the diversity re-ranking (MMR) looks at, per user.
        exploration_share: the share of the knowledge-graph bonus in the diversity part.
        normalisation: how relevance and popularity are mapped to ``[0, 1]``.
        query_mix: with a query, its share in relevance.
        include_seen: also rank the products the user already interacted with.
    """

    weights: Weights
    k: int = 10
    num_candidates: int = 200
    exploration_share: float = 0.5
    normalisation: NormaliseMethod = "minmax"
    query_mix: float = 0.5
    include_seen: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ConfigError(f"k must be between 1 and {MAX_K}; found {self.k}.")
        if self.num_candidates < 1:
            raise ConfigError(f"num_candidates must be at least 1; found {self.num_candidates}.")
        if not 0 <= self.exploration_share <= 1:
            raise ConfigError(f"exploration_share must be between 0 and 1; found {self.exploration_share}.")
        if self.normalisation not in ("minmax", "rank"):
            raise ConfigError(f"normalisation must be 'minmax' or 'rank'; found {self.normalisation!r}.")
        if not 0 <= self.query_mix <= 1:
            raise ConfigError(f"query_mix must be between 0 and 1; found {self.query_mix}.")

    @classmethod
    def from_config(
        cls,
        config: RankConfig,
        weights: Weights | None = None,
        k: int | None = None,
        include_seen: bool = False,
    ) -> RankParams:
        """The config's settings; ``weights`` and ``k`` override it (e.g. from the command line)."""
        return cls(
            weights=weights if weights is not None else Weights.of(config.weights),
            k=config.k if k is None else int(k),
            num_candidates=config.num_candidates,
            exploration_share=config.exploration_share,
            normalisation=config.normalisation,
            query_mix=config.query_mix,
            include_seen=include_seen,
        )
