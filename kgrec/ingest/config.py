"""Settings of ingest: how events are weighted and what to do with questionable rows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kgrec.ingest.tables import EVENT_TYPES

EventType = Literal["view", "click", "cart", "purchase", "rating"]

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "cart": 3.0,
    "purchase": 5.0,
    "rating": 4.0,
}


class IngestConfig(BaseModel):
    """The ``ingest`` section of a run config."""

    model_config = ConfigDict(extra="forbid")

    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description=(
            "Weight of each event type; an interaction's `weight` column is the weight of its event. "
            "Keys are event types (view, click, cart, purchase, rating); events not listed weigh 1.0."
        ),
    )
    default_event: EventType = Field(
        "purchase",
        description="Event of an interaction row when the file has no `event` column or the cell is empty.",
    )
    unknown_products: Literal["skip", "reject"] = Field(
        "skip",
        description=(
            "Interactions naming a product that is not in the products file: 'skip' drops and counts them "
            "in the ingest report, 'reject' refuses the whole interactions file."
        ),
    )
    future_timestamp_margin_s: int = Field(
        86_400,
        ge=0,
        description=(
            "How many seconds after the load time an interaction's timestamp may lie (clocks of other "
            "systems run ahead a little); later timestamps, and any before 1970, are refused."
        ),
    )

    @field_validator("event_weights")
    @classmethod
    def _check_event_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event type(s) {unknown}; allowed: {list(EVENT_TYPES)}")
        not_positive = {event: w for event, w in weights.items() if not w > 0}
        if not_positive:
            raise ValueError(f"weights must be > 0, found {not_positive}")
        return weights

    def weight_of(self, event: str) -> float:
        """The weight of one event type (1.0 when not listed)."""
        return self.event_weights.get(event, 1.0)
