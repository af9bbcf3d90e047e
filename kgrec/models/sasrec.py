"""SASRec (Kang & McAuley, 2018): self-attentive next-item prediction.

Item embeddings are shared between the input and the output layer: the hidden state at
a position scores every item by a dot product with the item table. Row 0 of the table
is padding, so product ``p`` is row ``p + 1``. No file or network I/O here.
"""

from __future__ import annotations

from torch import Tensor, nn

from kgrec.models.sequence import CausalEncoder


class SASRec(nn.Module):
    """Item embeddings + :class:`~kgrec.models.sequence.CausalEncoder`.

    Args:
        num_products: ``P``; the item table has ``P + 1`` rows (row 0 = padding).
        dim: embedding size (64).
        max_length: longest window (50).
        num_blocks, num_heads, dropout: transformer shape (2, 1, 0.2).
    """

    def __init__(
        self, num_products: int, dim: int = 64, max_length: int = 50, num_blocks: int = 2, num_heads: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.num_products = num_products
        self.item = nn.Embedding(num_products + 1, dim, padding_idx=0)
        nn.init.normal_(self.item.weight[1:], std=dim**-0.5)
        self.encoder = CausalEncoder(dim, max_length, num_blocks, num_heads, dropout)
        self.scale = dim**0.5

    def forward(self, product_index: Tensor, present: Tensor) -> Tensor:
        """``product_index [b, W]`` (0-based products) and ``present [b, W]`` bool → hidden ``[b, W, dim]``."""
        rows = (product_index + 1) * present.long()
        return self.encoder(self.item(rows) * self.scale, present)

    @property
    def product_embedding(self) -> Tensor:
        """``[P, dim]`` the output layer (the input table without its padding row)."""
        return self.item.weight[1:]
