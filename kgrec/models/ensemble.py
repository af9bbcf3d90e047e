"""An ensemble of independently trained kgrec models, held as one vector space.

Member ``m`` owns columns ``m·dim .. (m+1)·dim`` of every vector. Each member's part is
L2-normalised and the whole is divided by ``sqrt(n)``, so a vector is a unit vector and
the cosine of two such vectors is the **mean of the members' cosines**: the ensemble's
score. Retrieval, the Neo4j vector index, the diversity re-ranking and the model
directory therefore treat an ensemble of ``n`` members as one model of width ``n·dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def unit_members(vectors: Tensor, members: int) -> Tensor:
    """``[..., n·dim]`` with each member's ``dim`` columns L2-normalised, over ``sqrt(n)``
    (plain L2 normalisation for one member)."""
    if members == 1:
        return F.normalize(vectors, dim=-1)
    parts = vectors.reshape(*vectors.shape[:-1], members, vectors.shape[-1] // members)
    return (F.normalize(parts, dim=-1) / members**0.5).reshape(vectors.shape)


class EncoderEnsemble(nn.Module):
    """The members' sequence user encoders behind one encoder's interface: member ``m``
    reads its own columns of the product vectors, and its output fills the same columns.

    Args:
        members: one :class:`~kgrec.models.sequence.SequenceUserEncoder` per member, in
            column order (all with the same ``max_length`` and ``time_gaps``).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def max_length(self) -> int:
        return self.members[0].max_length

    @property
    def time_gaps(self) -> bool:
        return self.members[0].time_gaps

    def user_vectors(self, product_vectors: Tensor, index: Tensor, weight: Tensor, timestamp: Tensor | None = None) -> Tensor:
        """``[b, n·dim]`` every member's hidden state at each row's latest event (normalise
        with :func:`unit_members`)."""
        columns = product_vectors.chunk(len(self.members), dim=-1)
        return torch.cat(
            [m.user_vectors(c, index, weight, timestamp) for m, c in zip(self.members, columns)], dim=-1
        )
