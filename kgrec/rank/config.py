"""Settings of the final scoring: the weights of its three parts and how each is built."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RankConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    relevance: float = Field(0.7, ge=0, description="Weight of the personal relevance part.")
    popularity: float = Field(0.1, ge=0, description="Weight of the time-decayed popularity part.")
    diversity: float = Field(0.2, ge=0, description="Weight of the explorative diversity part.")
    popularity_half_life_days: float = Field(30.0, gt=0, description="Half-life of an event's weight in popularity.")
