"""Causal self-attention over users' event sequences: the block shared by SASRec and
kgrec's sequence-aware user encoder.

Sequences are right-aligned windows (:meth:`kgrec.models.history.Histories.latest`):
column ``L - 1`` holds the latest event, padding sits on the left. Position ``i`` may
attend to positions ``j <= i`` that hold an event, and always to itself (so a padded
position never has an empty attention row and never produces NaN; its output is
simply ignored).

Pure torch: ranking and model loading import this without PyTorch Geometric.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from kgrec.errors import ConfigError


def attention_mask(present: Tensor, num_heads: int) -> Tensor:
    """``[b * num_heads, L, L]`` bool, True where attention is *not* allowed.

    Args:
        present: ``[b, L]`` bool, which positions hold an event.
    """
    b, length = present.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=present.device).tril()
    allowed = causal.unsqueeze(0) & present.unsqueeze(1)  # [b, L(query), L(key)]
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=present.device).unsqueeze(0)
    return (~allowed).repeat_interleave(num_heads, dim=0)


ENCODER_BLOCKS = ("pre_ln", "gated")


class GatedBlock(nn.Module):
    """A pre-LN transformer block whose residual branches pass through learned gates.

    ``x + dropout(sigmoid(G1 h) * attention(h))`` with ``h = LN1(x)``, then the same with a
    ``4 * dim`` GELU feed-forward. The gate lets each position decide, per dimension, how
    much of a branch to add, so an encoder over short, sparse histories can keep its input
    product nearly as it is where attention has little to add (gated residuals in the manner
    of LinkedIn's LiGR ranking transformer, whose layers eSASRec puts into SASRec).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_attention, self.norm_feedforward = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.gate_attention, self.gate_feedforward = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.feedforward = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        """``x [b, W, dim]``; ``src_mask [b * heads, W, W]`` bool, True where attention is not allowed."""
        h = self.norm_attention(x)
        attended = self.attention(h, h, h, attn_mask=src_mask, need_weights=False)[0]
        x = x + self.dropout(torch.sigmoid(self.gate_attention(h)) * attended)
        h = self.norm_feedforward(x)
        return x + self.dropout(torch.sigmoid(self.gate_feedforward(h)) * self.feedforward(h))


class CausalEncoder(nn.Module):
    """Learned positions + pre-LN causal transformer blocks + a final LayerNorm.

    Args:
        dim: model width (the item / product embedding size).
        max_length: ``L``, the longest window; position ``L - 1`` is always the latest event.
        num_blocks, num_heads, dropout: the transformer's shape (SASRec: 2, 1, 0.2).
        block: ``"pre_ln"`` = SASRec's block (PyTorch's pre-LN encoder layer, a feed-forward
            as wide as ``dim``, ReLU); ``"gated"`` = :class:`GatedBlock`.
    """

    def __init__(
        self, dim: int, max_length: int, num_blocks: int = 2, num_heads: int = 1, dropout: float = 0.2,
        block: str = "pre_ln",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"The embedding size ({dim}) must be divisible by the attention heads ({num_heads}).")
        if block not in ENCODER_BLOCKS:
            raise ConfigError(f"Unknown encoder block {block!r}; choose one of {', '.join(ENCODER_BLOCKS)}.")
        self.dim, self.max_length, self.num_heads, self.block = dim, max_length, num_heads, block
        self.position = nn.Embedding(max_length, dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            GatedBlock(dim, num_heads, dropout)
            if block == "gated"
            else nn.TransformerEncoderLayer(
                dim, num_heads, dim_feedforward=dim, dropout=dropout, batch_first=True, norm_first=True
            )
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, inputs: Tensor, present: Tensor) -> Tensor:
        """``inputs [b, W, dim]`` (``W <= L`` right-aligned columns) and ``present [b, W]`` bool
        → ``[b, W, dim]`` hidden states; row ``i`` sees only columns ``<= i``."""
        width = inputs.shape[1]
        if width > self.max_length:
            raise ValueError(f"sequence width {width} exceeds max_length {self.max_length}")
        # Right-aligned: the last column is always position L - 1, whatever the width.
        positions = torch.arange(self.max_length - width, self.max_length, device=inputs.device)
        x = (inputs + self.position(positions)) * present.unsqueeze(-1).to(inputs.dtype)
        x = self.dropout(x)
        mask = attention_mask(present, self.num_heads)
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.norm(x)


def trim_padding(present: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Drop the leading columns that are padding in every row (saves attention on short histories).

    Args:
        present: ``[b, L]`` bool; tensors: each ``[b, L, ...]``.

    Returns:
        ``(present[:, s:], *[t[:, s:] for t in tensors])`` with ``s`` the first column holding an event
        (at least one column is kept).
    """
    start = first_event_column(present.any(0).cpu().numpy())
    return (present[:, start:],) + tuple(t[:, start:] for t in tensors)


def first_event_column(any_present: np.ndarray) -> int:
    """The first column where ``any_present`` (``[L]`` bool: a column holds an event in some row)
    is True; the last column when none is, so a window keeps at least one column."""
    return int(any_present.argmax()) if any_present.any() else any_present.size - 1


EVENT_TOKEN_TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}
"""How close an event weight must be to an event type's weight to name it (:func:`event_tokens`)."""


def event_tokens(weight: Tensor, event_weight: Tensor) -> Tensor:
    """``[b, L]`` long event-type tokens from event weights.

    Histories carry each (user, product) pair's heaviest event weight, and ingest gives
    every event type a fixed weight (``ingest.event_weights``), so the weight names the
    pair's heaviest event type. Token ``k + 1`` = the ``k``-th event type of
    ``event_weight`` (the first one when types share a weight: they cannot be told
    apart); ``0`` = padding or a weight no type has.

    Args:
        weight: ``[b, L]`` raw event weights (0 = padding).
        event_weight: ``[E]`` the weight of each event type, in ``EVENT_TYPES`` order.
    """
    close = torch.isclose(weight.unsqueeze(-1), event_weight.to(weight), **EVENT_TOKEN_TOLERANCE)  # [b, L, E]
    found = close.any(-1)
    first = close.float().argmax(-1)  # the first matching type
    return torch.where(found & (weight > 0), first + 1, torch.zeros_like(first))


GAP_BUCKETS = 16
"""Time-gap buckets: ``floor(log2(1 + gap in hours))``, the last one holding every longer gap
(2**15 hours is about 3.7 years)."""


def gap_tokens(timestamp: Tensor, present: Tensor) -> Tensor:
    """``[b, W]`` long time-gap tokens: how long before each event the previous one was.

    Token ``0`` = padding, ``1`` = the window's first event (nothing before it to
    measure from), ``2 + k`` = a gap in bucket ``k`` (:data:`GAP_BUCKETS`): 0 for the
    same hour (or the same day when a shop records days), 4 for about a day, 7 for a
    week, 9 for a month. Log buckets because a minute against an hour matters as much
    as a week against a month.

    Args:
        timestamp: ``[b, W]`` event times in epoch seconds, right-aligned like the window.
        present: ``[b, W]`` bool, which positions hold an event.
    """
    gap_hours = (timestamp[:, 1:] - timestamp[:, :-1]).clamp(min=0).double() / 3600.0
    bucket = torch.log2(1.0 + gap_hours).floor().long().clamp(max=GAP_BUCKETS - 1)
    has_previous = present[:, 1:] & present[:, :-1]
    tokens = torch.zeros_like(timestamp, dtype=torch.long)
    tokens[:, 1:] = torch.where(has_previous, bucket + 2, torch.ones_like(bucket))
    tokens[:, 0] = 1
    return torch.where(present, tokens, torch.zeros_like(tokens))


class SequenceUserEncoder(nn.Module):
    """kgrec's sequence-aware user encoder: a causal transformer over the user's latest
    events, reading the same product vectors the model scores against.

    Input at a position = the L2-normalised product vector (scaled by ``sqrt(dim)``) +
    a position embedding + an event-type embedding (:func:`event_tokens`) + with
    ``time_gaps`` a time-gap embedding (:func:`gap_tokens`). The user is the hidden
    state at the latest event.

    Args:
        dim: product vector size.
        max_length: ``L``, the most events read.
        event_weight: ``[E]`` the weight of each event type (``ingest.event_weights``,
            ``EVENT_TYPES`` order); kept as a buffer so a loaded model maps weights the
            way it was trained.
        num_blocks, num_heads, dropout, block: the transformer (:class:`CausalEncoder`).
        time_gaps: add an embedding of the time since the previous event.
    """

    def __init__(
        self, dim: int, max_length: int, event_weight: Tensor, num_blocks: int = 2, num_heads: int = 1,
        dropout: float = 0.2, time_gaps: bool = False, block: str = "pre_ln",
    ) -> None:
        super().__init__()
        self.register_buffer("event_weight", event_weight.float().reshape(-1).clone())
        self.event = nn.Embedding(self.event_weight.numel() + 1, dim)
        nn.init.normal_(self.event.weight, std=0.02)
        self.gap: nn.Embedding | None = None
        if time_gaps:
            self.gap = nn.Embedding(GAP_BUCKETS + 2, dim)
            nn.init.normal_(self.gap.weight, std=0.02)
        self.encoder = CausalEncoder(dim, max_length, num_blocks, num_heads, dropout, block)
        self.scale = dim**0.5

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @staticmethod
    def block_of(state: dict[str, Tensor]) -> str:
        """The block type a saved encoder state was trained with (read from its weights, so
        model directories written before the setting existed load as ``pre_ln``)."""
        return "gated" if any(".gate_attention." in key for key in state) else "pre_ln"

    @property
    def time_gaps(self) -> bool:
        """Whether the encoder reads event times (callers pass ``timestamp``)."""
        return self.gap is not None

    def forward(self, product_vectors: Tensor, index: Tensor, weight: Tensor, timestamp: Tensor | None = None) -> Tensor:
        """Hidden states at every position.

        Args:
            product_vectors: ``[P, dim]`` the model's product vectors (normalised here).
            index: ``[b, W]`` product indices, right-aligned (``W <= L``).
            weight: ``[b, W]`` raw event weights, 0 = padding.
            timestamp: ``[b, W]`` event times (epoch seconds); needed with ``time_gaps``.

        Returns:
            ``[b, W, dim]``; position ``i`` has seen events ``<= i`` only.
        """
        present = weight > 0
        # Gather, then normalise: normalising the whole catalog would cost O(P) per request.
        x = nn.functional.normalize(product_vectors[index], dim=-1) * self.scale
        x = x + self.event(event_tokens(weight, self.event_weight))
        if self.gap is not None:
            if timestamp is None:
                raise ValueError("this encoder reads time gaps: pass the events' timestamps")
            x = x + self.gap(gap_tokens(timestamp, present))
        return self.encoder(x, present)

    def user_vectors(
        self, product_vectors: Tensor, index: Tensor, weight: Tensor, timestamp: Tensor | None = None,
        chunk: int = 4096,
    ) -> Tensor:
        """``[b, dim]`` the hidden state at each row's latest event, in chunks of rows.

        Args: as :meth:`forward` with ``W <= L``; leading all-padding columns are skipped.
        """
        out = []
        for rows in torch.arange(index.shape[0]).split(chunk):
            columns = [index[rows], weight[rows]] + ([] if timestamp is None else [timestamp[rows]])
            present, i, w, *t = trim_padding(weight[rows] > 0, *columns)
            out.append(self(product_vectors, i, w, *t)[:, -1])
        return torch.cat(out) if out else product_vectors.new_zeros(0, product_vectors.shape[1])
