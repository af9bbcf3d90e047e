"""Settings of model training: optimiser, loss, schedule, early stopping and device."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1, description="Upper bound on passes over the training pairs.")
    batch_size: int = Field(2048, ge=1, description="Training pairs (history → next product) per step.")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate.")
    lr_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description=(
            "Each epoch's learning rate is lr * lr_decay**(epoch - 1), the same schedule in every fit, so the "
            "refits for the chosen epoch count end where the epoch-selection fit did (1: constant)."
        ),
    )
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay (L2) on every parameter.")
    loss: Literal["softmax", "bpr"] = Field(
        "softmax", description="'softmax' = cross-entropy over negatives (with temperature); 'bpr' = pairwise BPR."
    )
    negatives: int = Field(
        1024,
        ge=0,
        description="Random negatives shared by a batch for the softmax (0: score against every product).",
    )
    in_batch_negatives: bool = Field(
        True, description="With sampled negatives, also use the batch's other targets as negatives."
    )
    sequence_batch_size: int = Field(
        128, ge=1, description="With model.user_encoder 'transformer': users' sequences per step (each predicts every next product)."
    )
    full_softmax_max_products: int = Field(
        50_000,
        ge=1,
        description=(
            "With model.user_encoder 'transformer': softmax over the whole catalog up to this many products; "
            "above it, over `negatives` popularity-sampled products with logQ correction."
        ),
    )
    propagation: Literal["cached", "full"] = Field(
        "cached",
        description=(
            "How a training step gets its product vectors: 'cached' = the text terms are propagated once, each "
            "product's own and one-hop terms live, the deeper ID terms from a propagation refreshed every epoch "
            "(a step propagates only its own products, not the graph); 'full' = propagate the "
            "whole graph at every step (exact gradients; an epoch grows with the square of the shop). "
            "model.user_mode 'id' and 'hybrid' always use 'full'."
        ),
    )
    eval_users: int | None = Field(
        50_000,
        ge=1,
        description=(
            "Users scored in each evaluation (valid during training, test after the refit): a fixed random sample "
            "of this many when a part has more, ranked against the whole catalog (None: every user)."
        ),
    )
    unseen_negatives: bool = Field(
        False,
        description=(
            "With model.user_encoder 'transformer': whether products without training events are negatives of the "
            "softmax. False (the default) leaves them out, so a new product is not pushed away from every user "
            "before anyone has seen it (Amazon Office with 10% of products withheld: their Recall@20 0.054 "
            "against 0.012 with True, and overall NDCG@10 0.0790 against 0.0781; docs/MODEL.md, Cold start)."
        ),
    )
    temperature: float = Field(0.1, gt=0, description="Softmax temperature on cosine-like scores.")
    patience: int = Field(3, ge=1, description="Stop after this many evaluations without a better valid NDCG@10.")
    eval_every: int = Field(1, ge=1, description="Evaluate on the valid part every this many epochs.")
    nproc: int = Field(
        1,
        ge=1,
        description=(
            "Processes that train one model together with torch.distributed DistributedDataParallel (gloo on the "
            "CPU, NCCL on GPUs): each step's batch is split between them and their gradients averaged."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' takes a CUDA GPU when one is visible, else the CPU."
    )
