"""Settings of the kgrec graph model (architecture only; training knobs live in ``train``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(64, ge=2, description="Size of every user, product, brand and category embedding.")
    layers: int = Field(2, ge=0, description="Propagation layers over the typed graph (0: no propagation).")
    use_text: bool = Field(True, description="Add a projection of each product's text embedding to its ID embedding.")
    use_kg: bool = Field(
        True, description="Put brand, category and product-product relation edges into the graph (else only user-product)."
    )
    use_user_nodes: bool = Field(
        True, description="Put user-product interaction edges into the propagation graph."
    )
    user_mode: Literal["history", "id", "hybrid"] = Field(
        "history",
        description=(
            "How a user is represented: 'history' = recency-weighted mean of the embeddings of their most "
            "recent products (updates in real time, no retraining); 'id' = the propagated user ID embedding "
            "(LightGCN); 'hybrid' = history_weight * history + (1 - history_weight) * id."
        ),
    )
    history_weight: float = Field(0.8, ge=0, le=1, description="Share of the history part in 'hybrid' mode.")
    history_length: int = Field(20, ge=1, description="How many of a user's most recent products form the history.")
    recency_decay: float = Field(
        0.7, gt=0, le=1, description="Weight of the product k steps before the latest one is recency_decay**k."
    )
    user_encoder: Literal["mean", "transformer"] = Field(
        "transformer",
        description=(
            "How 'history' mode turns a user's latest events into a vector: 'mean' = the recency-weighted mean "
            "of their product embeddings (history_length, recency_decay); 'transformer' = a causal transformer "
            "over the latest sequence_length events (product vector + position + event type), trained end to end. "
            "Applies to user_mode 'history'; 'id' and 'hybrid' keep the mean for their history part."
        ),
    )
    sequence_length: int = Field(50, ge=1, description="With user_encoder 'transformer': how many latest events it reads.")
    encoder_blocks: int = Field(2, ge=1, description="With user_encoder 'transformer': self-attention blocks.")
    encoder_heads: int = Field(1, ge=1, description="With user_encoder 'transformer': attention heads (dim must divide by it).")
    encoder_dropout: float = Field(0.2, ge=0, lt=1, description="With user_encoder 'transformer': dropout in the blocks.")
    encoder_block: Literal["pre_ln", "gated"] = Field(
        "pre_ln",
        description=(
            "With user_encoder 'transformer': the kind of block. 'pre_ln' = SASRec's pre-LayerNorm block "
            "(a feed-forward as wide as dim, ReLU); 'gated' = each residual branch scaled by a learned sigmoid "
            "gate of its input, with a 4 x dim GELU feed-forward (LiGR-style, as in eSASRec). With train.lr_decay 0.9 "
            "it scored higher on Amazon Beauty through the product path, not on Office (docs/MODEL.md)."
        ),
    )
    time_gaps: bool = Field(
        False,
        description=(
            "With user_encoder 'transformer': add an embedding of the time since the user's previous event "
            "(log buckets of hours: same hour or day, a day, a week, a month, ...) to each event's input. For shops "
            "whose timestamps are real times; off by default because its value is not measured (the benchmark "
            "datasets record an order of events, not times; docs/MODEL.md)."
        ),
    )
    id_init: Literal["random", "text"] = Field(
        "text",
        description=(
            "How product ID embeddings start: 'random' = normal(0, 0.1); 'text' = each product's text embedding "
            "on the catalog's top `dim` principal components, so a product with few events starts where its text "
            "places it. Needs use_text (without it, IDs start random)."
        ),
    )
    text_init_std: float = Field(
        0.3,
        gt=0,
        description=(
            "With id_init 'text': the standard deviation of the starting ID entries. Larger keeps the text's "
            "layout longer against training's updates (Amazon Office: 0.1 < 0.3 ≈ 1.0, and 1.0 needs ~2.5x the epochs)."
        ),
    )
    ensemble_size: int = Field(
        1,
        ge=1,
        description=(
            "How many models kgrec trains independently (seeds seed, seed+1, ...) and averages the scores of: "
            "each member's vectors fill their own dim columns, so an ensemble ranks, serves and is stored as one "
            "model of width ensemble_size x dim. Training takes ensemble_size times as long; 2 scored 1.8% higher "
            "NDCG@10 on Amazon Beauty and 0.5% higher on Amazon Office (mean of three runs) through the product path "
            "(docs/MODEL.md). configs/accurate.yaml sets 2 members of dim 128."
        ),
    )
    relation_weight: float = Field(
        1.0, ge=0, description="Edge weight of product-product relations (also_bought, ...) relative to other edges."
    )
    co_interaction_neighbours: int = Field(
        100,
        ge=0,
        description=(
            "The co-interaction similarities (product <- user -> product paths) kgrec train fits and stores with "
            "the model, which rank.co_interaction_weight adds to the score: the most similar products each product "
            "keeps, and the most products each product's events add to (its strongest links), so a request's work "
            "grows with its history, not the catalog. 0: none fitted. docs/MODEL.md, 'Co-interaction paths in the score'."
        ),
    )

    @property
    def sequence_encoder(self) -> bool:
        """Whether users are encoded by the transformer (``user_encoder`` applies to ``user_mode: history``)."""
        return self.user_encoder == "transformer" and self.user_mode == "history"

    @model_validator(mode="after")
    def _check_encoder(self) -> ModelConfig:
        if self.user_encoder == "transformer" and self.dim % self.encoder_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by encoder_heads ({self.encoder_heads}).")
        return self
