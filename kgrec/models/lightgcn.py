"""LightGCN (He et al., SIGIR 2020) on the user-product bipartite graph.

Node order in the propagation graph: users ``0 .. num_users - 1``, then products
``num_users .. num_users + num_products - 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kgrec.models.hetero_graph import symmetric_normalized


def normalized_adjacency(user_index: Tensor, product_index: Tensor, num_users: int, num_products: int) -> Tensor:
    """Symmetric ``D^-1/2 A D^-1/2`` of the bipartite graph, as a sparse CSR ``[N, N]``.

    Args:
        user_index, product_index: ``[n]`` long, the (user, product) edges (each once).
        num_users, num_products: node counts; ``N = num_users + num_products``.
    """
    row = torch.cat([user_index, product_index + num_users])
    col = torch.cat([product_index + num_users, user_index])
    return symmetric_normalized(row, col, torch.ones(row.numel()), num_users + num_products)


class _SymmetricSpMM(torch.autograd.Function):
    """``adjacency @ x`` whose backward reuses ``adjacency`` (valid because it is symmetric),
    about twice as fast as autograd's transpose of a CSR matrix."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, adjacency: Tensor, x: Tensor) -> Tensor:
        ctx.adjacency = adjacency  # type: ignore[attr-defined]
        return adjacency @ x

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.adjacency @ grad  # type: ignore[attr-defined]


class LightGCN(nn.Module):
    """Embeddings smoothed over the interaction graph, no weights or non-linearities.

    ``E^(l+1) = Â E^(l)``; the final embedding is the mean of ``E^(0) .. E^(L)``.

    Args:
        num_users, num_products: node counts.
        embedding_dim: size of each embedding.
        num_layers: propagation steps ``L``.
        init_std: standard deviation of the normal initialisation of ``E^(0)``.
    """

    def __init__(
        self,
        num_users: int,
        num_products: int,
        embedding_dim: int = 64,
        num_layers: int = 3,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_products = num_products
        self.num_layers = num_layers
        self.embedding = nn.Embedding(num_users + num_products, embedding_dim)
        nn.init.normal_(self.embedding.weight, std=init_std)

    def get_embedding(self, adjacency: Tensor) -> tuple[Tensor, Tensor]:
        """``([num_users, dim], [num_products, dim])`` after propagation over ``adjacency``
        (the symmetric ``[N, N]`` sparse matrix of :func:`normalized_adjacency`)."""
        layer = self.embedding.weight
        total = layer
        for _ in range(self.num_layers):
            layer = _SymmetricSpMM.apply(adjacency, layer)
            total = total + layer
        final = total / (self.num_layers + 1)
        return final[: self.num_users], final[self.num_users :]

    def forward(self, adjacency: Tensor, user_index: Tensor, product_index: Tensor) -> Tensor:
        """``[n]`` scores of the ``[n]`` (user, product) pairs."""
        user_emb, product_emb = self.get_embedding(adjacency)
        return (user_emb[user_index] * product_emb[product_index]).sum(dim=-1)
