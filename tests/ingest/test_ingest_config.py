"""IngestConfig: defaults, and refusal of bad weights and keys."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from kgrec.ingest.config import EventType, IngestConfig
from kgrec.ingest.tables import EVENT_TYPES


def test_ingest_config_event_literal_matches_event_types() -> None:
    assert get_args(EventType) == EVENT_TYPES


def test_ingest_config_defaults_weigh_every_event() -> None:
    config = IngestConfig()
    assert set(config.event_weights) == set(EVENT_TYPES)
    assert config.default_event == "purchase" and config.unknown_products == "skip"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"event_weights": {"wishlist": 1.0}}, "wishlist"),
        ({"event_weights": {"view": 0.0}}, "> 0"),
        ({"default_event": "wishlist"}, "default_event"),
        ({"unknown_products": "ignore"}, "unknown_products"),
        ({"description_max_chars": 10}, "description_max_chars"),
    ],
)
def test_ingest_config_rejects_bad_values(overrides: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        IngestConfig(**overrides)
