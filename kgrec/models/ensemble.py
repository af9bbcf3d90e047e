"""An ensemble of independently trained kgrec models, held as one vector space.

Member ``m`` owns columns ``m·dim .. (m+1)·dim`` of every vector. Each member's part is
L2-normalised and the whole is divided by ``sqrt(n)``, so a vector is a unit vector and
the cosine of two such vectors is the **mean of the members' cosines**: the ensemble's
score. Retrieval, the Neo4j vector index, the diversity re-ranking and the model
directory therefore treat an ensemble of ``n`` members as one model of width ``n·dim``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgrec.models.sequence import EVENT_TOKEN_TOLERANCE, first_event_column, gap_tokens
from kgrec.threads import blas_threads


def unit_members(vectors: Tensor, members: int) -> Tensor:
    """``[..., n·dim]`` with each member's ``dim`` columns L2-normalised, over ``sqrt(n)``
    (plain L2 normalisation for one member)."""
    if members == 1:
        return F.normalize(vectors, dim=-1)
    parts = vectors.reshape(*vectors.shape[:-1], members, vectors.shape[-1] // members)
    return (F.normalize(parts, dim=-1) / members**0.5).reshape(vectors.shape)


STACKED_MAX_ROWS = 256
"""The most rows an inference call runs stacked in numpy (:class:`StackedEncoders`). Beyond it the
members run one by one in torch: numpy's cost per call is a fraction of torch's, but it runs a big
batch's attention on one thread and unfused, 1.7x slower for 20,000 users on two cores."""


class EncoderEnsemble(nn.Module):
    """The members' sequence user encoders behind one encoder's interface: member ``m``
    reads its own columns of the product vectors, and its output fills the same columns.

    For inference (eval mode, no gradient) members with SASRec's pre-LN blocks run as one
    stacked encoder (:class:`StackedEncoders`): every step is one batched call for all the
    members instead of one call per member, which is what a served request pays for: two 128-d
    members took 2.3 ms one by one and 1.3 ms stacked in torch for one user's 20 events on one
    thread, almost all of it the overhead of each call, not arithmetic. A single model's encoder
    runs the same way, as an ensemble of one (0.9 ms as a module, 0.3 ms stacked in numpy). Calls of
    more than :data:`STACKED_MAX_ROWS` rows (a batch) run the members one by one.

    Args:
        members: one :class:`~kgrec.models.sequence.SequenceUserEncoder` per member, in
            column order (all with the same ``max_length`` and ``time_gaps``).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self._tensors: list[Tensor] | None = None
        self._stacked: tuple[tuple[int, ...], StackedEncoders | None] | None = None

    @property
    def max_length(self) -> int:
        return self.members[0].max_length

    @property
    def time_gaps(self) -> bool:
        return self.members[0].time_gaps

    def user_vectors(self, product_vectors: Tensor, index: Tensor, weight: Tensor, timestamp: Tensor | None = None) -> Tensor:
        """``[b, n·dim]`` every member's hidden state at each row's latest event (normalise
        with :func:`unit_members`)."""
        inference = not (self.training or torch.is_grad_enabled())
        stacked = self.stacked() if inference and index.shape[0] <= STACKED_MAX_ROWS else None
        if stacked is not None:
            return stacked.user_vectors(product_vectors, index, weight, timestamp)
        columns = product_vectors.chunk(len(self.members), dim=-1)
        return torch.cat(
            [m.user_vectors(c, index, weight, timestamp) for m, c in zip(self.members, columns)], dim=-1
        )

    def stacked(self) -> StackedEncoders | None:
        """The members stacked for inference, rebuilt when a weight changes; None when they cannot
        be (a ``gated`` block, or members that differ in shape or in their event weights)."""
        # The tensors are listed once per mode switch: walking the modules costs more than the encoders.
        if self._tensors is None:
            self._tensors = [*self.parameters(), *self.buffers()]
        version = tuple(t._version for t in self._tensors)
        if self._stacked is None or self._stacked[0] != version:
            self._stacked = (version, StackedEncoders.of(list(self.members)))
        return self._stacked[1]

    def train(self, mode: bool = True) -> EncoderEnsemble:
        """As :meth:`nn.Module.train`; also forgets the stacked weights (they are taken again, from
        the members' tensors as they are then, at the next inference)."""
        self._tensors = self._stacked = None
        return super().train(mode)


class StackedEncoders:
    """Pre-LN sequence encoders of the same shape, their weights stacked on a leading member axis,
    for inference on the CPU.

    Computes exactly what each :class:`~kgrec.models.sequence.SequenceUserEncoder` computes in
    eval mode (no dropout), with batched matrix products over the members, in numpy: a served
    request is one user's few dozen events, where each torch call's fixed cost (~8 µs here)
    outweighs its arithmetic and numpy's is a fraction of it (one 64-d member: 0.9 → 0.3 ms).
    The event tokens and the mask are computed as the module's functions compute them
    (:func:`~kgrec.models.sequence.event_tokens`, ``attention_mask``), in numpy too; the padding
    is trimmed by the same rule (:func:`~kgrec.models.sequence.first_event_column`).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        first = members[0]
        self.members = len(members)
        self.dim = first.encoder.dim
        self.max_length = first.max_length
        self.scale = np.float32(first.scale)
        self.event_weight = first.event_weight.detach().cpu().numpy()

        def stack(modules: list[nn.Module], name: str, transpose: bool = False) -> np.ndarray:
            tensors = [getattr(m, name).detach().cpu().float() for m in modules]
            return torch.stack([t.T if transpose else t for t in tensors]).numpy()

        self.event = stack([m.event for m in members], "weight")  # [n, E + 1, dim]
        self.gap = stack([m.gap for m in members], "weight") if first.gap is not None else None
        encoders = [m.encoder for m in members]
        self.position = stack([e.position for e in encoders], "weight")  # [n, L, dim]
        # Per block: (weight [n, in, out], bias [n, out]) of each linear map, and each norm's (weight, bias, eps).
        self.blocks = []
        for i in range(len(first.encoder.blocks)):
            layers = [e.blocks[i] for e in encoders]
            attention = [layer.self_attn for layer in layers]
            self.blocks.append({
                "norm1": (stack([l.norm1 for l in layers], "weight"), stack([l.norm1 for l in layers], "bias"), layers[0].norm1.eps),
                "in": (stack(attention, "in_proj_weight", transpose=True), stack(attention, "in_proj_bias")),
                "out": (stack([a.out_proj for a in attention], "weight", True), stack([a.out_proj for a in attention], "bias")),
                "norm2": (stack([l.norm2 for l in layers], "weight"), stack([l.norm2 for l in layers], "bias"), layers[0].norm2.eps),
                "linear1": (stack([l.linear1 for l in layers], "weight", True), stack([l.linear1 for l in layers], "bias")),
                "linear2": (stack([l.linear2 for l in layers], "weight", True), stack([l.linear2 for l in layers], "bias")),
            })
        norms = [e.norm for e in encoders]
        self.norm = (stack(norms, "weight"), stack(norms, "bias"), first.encoder.norm.eps)

    @classmethod
    def of(cls, members: list[nn.Module]) -> StackedEncoders | None:
        """The stacked members, or None when they cannot be stacked."""
        first = members[0]

        def shape(m: nn.Module) -> tuple:
            return (m.encoder.block, m.encoder.dim, m.max_length, m.encoder.num_heads, len(m.encoder.blocks),
                    m.gap is None, tuple(m.event_weight.tolist()))
        if first.encoder.block != "pre_ln" or first.encoder.num_heads != 1 or any(shape(m) != shape(first) for m in members):
            return None
        if any(b.activation_relu_or_gelu != 1 or not b.norm_first for b in first.encoder.blocks):
            return None
        return cls(members)

    def user_vectors(
        self, product_vectors: Tensor, index: Tensor, weight: Tensor, timestamp: Tensor | None = None, chunk: int = 4096
    ) -> Tensor:
        """``[b, n·dim]`` (CPU): as :meth:`EncoderEnsemble.user_vectors`, with every member at once,
        in chunks of rows."""
        table = product_vectors.detach().cpu().float().numpy()
        with blas_threads(1):
            columns = [index, weight] + ([] if timestamp is None else [timestamp])
            out = [self._rows(table, *(c.cpu() for c in part)) for part in zip(*(c.split(chunk) for c in columns))]
        return torch.from_numpy(np.concatenate(out)) if out else torch.zeros(0, product_vectors.shape[1])

    def _rows(self, table: np.ndarray, index: Tensor, weight: Tensor, timestamp: Tensor | None = None) -> np.ndarray:
        n, dim = self.members, self.dim
        index, weight = index.numpy(), weight.numpy()
        present = weight > 0
        start = first_event_column(present.any(0))
        present, index, weight = present[:, start:], index[:, start:], weight[:, start:]
        b, width = index.shape
        x = table[index].reshape(b, width, n, dim).transpose(2, 0, 1, 3)  # [n, b, W, dim]
        length = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
        x = x / np.maximum(length, np.float32(1e-12)) * self.scale + self.event[:, _event_tokens(weight, self.event_weight)]
        if self.gap is not None:
            if timestamp is None:
                raise ValueError("this encoder reads time gaps: pass the events' timestamps")
            x = x + self.gap[:, gap_tokens(timestamp[:, start:], torch.from_numpy(present)).numpy()]
        x = (x + self.position[:, None, self.max_length - width :]) * present[..., None]
        # As attention_mask: causal, to events only, and each position to itself.
        allowed = (np.tri(width, dtype=bool)[None] & present[:, None, :]) | np.eye(width, dtype=bool)[None]

        def linear(h: np.ndarray, weights: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            # One matrix product per member over all of its rows.
            return (h.reshape(n, -1, h.shape[-1]) @ weights[0] + weights[1][:, None]).reshape(*h.shape[:-1], -1)

        def norm(h: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
            centred = h - h.mean(-1, keepdims=True)
            variance = np.einsum("...i,...i->...", centred, centred)[..., None] / np.float32(dim)
            return centred / np.sqrt(variance + np.float32(eps)) * weight[:, None, None] + bias[:, None, None]

        inverse_sqrt_dim = np.float32(1.0 / np.sqrt(dim))
        for number, block in enumerate(self.blocks, start=1):
            h = norm(x, *block["norm1"])
            q, k, v = np.split(linear(h, block["in"]), 3, axis=-1)
            if number == len(self.blocks):
                # Only the latest event's state is read: the last block needs every position's keys
                # and values, but only the latest query (with its row of the mask and its residual).
                q, allowed, x = q[:, :, -1:], allowed[:, -1:], x[:, :, -1:]
            attention = np.where(allowed, (q @ k.swapaxes(-1, -2)) * inverse_sqrt_dim, np.float32(-np.inf))
            attention = np.exp(attention - attention.max(-1, keepdims=True))  # each row allows itself
            attention /= attention.sum(-1, keepdims=True)
            x = x + linear(attention @ v, block["out"])
            h = norm(x, *block["norm2"])
            x = x + linear(np.maximum(linear(h, block["linear1"]), np.float32(0.0)), block["linear2"])
        x = norm(x[:, :, -1:], *self.norm)[:, :, 0]  # [n, b, dim]
        return np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(b, n * dim)


def _event_tokens(weight: np.ndarray, event_weight: np.ndarray) -> np.ndarray:
    """:func:`~kgrec.models.sequence.event_tokens` in numpy."""
    close = np.isclose(weight[..., None], event_weight.astype(weight.dtype), **EVENT_TOKEN_TOLERANCE)
    return np.where(close.any(-1) & (weight > 0), close.argmax(-1) + 1, 0)
