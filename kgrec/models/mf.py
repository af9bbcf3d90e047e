"""Matrix factorisation: one embedding per user and per product, scored by dot product."""

from __future__ import annotations

from torch import Tensor, nn


class MatrixFactorization(nn.Module):
    """``score(u, p) = <user_emb[u], product_emb[p]>`` (the BPR-MF model of Rendle et al. 2009).

    Args:
        num_users: rows of the user table.
        num_products: rows of the product table.
        embedding_dim: size of each embedding.
        init_std: standard deviation of the normal initialisation.
    """

    def __init__(self, num_users: int, num_products: int, embedding_dim: int = 64, init_std: float = 0.1) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(num_users, embedding_dim)
        self.product_embedding = nn.Embedding(num_products, embedding_dim)
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.product_embedding.weight, std=init_std)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """``([num_users, dim], [num_products, dim])``: the embeddings used for scoring."""
        return self.user_embedding.weight, self.product_embedding.weight

    def forward(self, user_index: Tensor, product_index: Tensor) -> Tensor:
        """``[n]`` scores of the ``[n]`` (user, product) pairs."""
        return (self.user_embedding(user_index) * self.product_embedding(product_index)).sum(dim=-1)
