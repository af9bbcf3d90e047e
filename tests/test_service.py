"""The parts of a loaded model that need no database."""

from __future__ import annotations

import time

import torch

from kgrec.rank.parts import decayed_popularity
from kgrec.service import popularity_anchor


def test_popularity_anchor_ignores_a_timestamp_in_the_far_future():
    now = int(time.time())
    timestamps = torch.tensor([now - 86_400, now - 3_600, 253_402_300_799])  # 9999-12-31T23:59:59Z
    anchor = popularity_anchor(timestamps)
    assert now <= anchor <= int(time.time())
    # Anchored at the far-future event, every other product would age to 0.
    popularity = decayed_popularity(torch.tensor([0, 1, 2]), timestamps, torch.ones(3), 3, anchor, half_life_days=30)
    assert popularity[0] > 0.9 and popularity[1] > 0.99


def test_popularity_anchor_is_the_latest_event_of_an_old_history():
    timestamps = torch.tensor([1_400_000_000, 1_400_086_400])
    assert popularity_anchor(timestamps) == 1_400_086_400
    # Years of half-lives later the sums are tiny, but still told apart in float32.
    popularity = decayed_popularity(torch.tensor([0, 1]), timestamps, torch.ones(2), 2, now=2_000_000_000, half_life_days=30)
    assert popularity[1] > popularity[0] > 0
