"""Products added after training, placed in the trained embedding space without retraining.

A product written to Neo4j after the model was trained (``kgrec build-graph`` with a
new catalog row) has no trained embedding. Its vector is the mean of what it links to
in the knowledge graph that the model does know:

- its brand's embedding;
- the mean embedding of the categories it is listed in;
- the mean embedding of the products it is related to (``ALSO_BOUGHT`` …, either direction);
- with a text model, the mean embedding of the ``text_neighbours`` catalog products whose
  text embedding is closest to its own (title, brand, categories, description).

Each of these four parts that is present weighs the same, so fifty related products do
not drown the brand; the vector is then L2-normalised like every other product's. This is one step of the model's own propagation (a node is the mean of its
neighbours), taken from the new node, so the product lands next to its brand, its
categories and the products it resembles. A product with none of these parts cannot be
placed and is left out until the next training.
"""

from __future__ import annotations

import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from kgrec.snapshot.idmap import IdMap

TEXT_NEIGHBOURS = 10


def _mean_rows(embedding: Tensor, ids: IdMap, wanted: list[str]) -> Tensor | None:
    index = ids.indices(wanted, strict=False) if wanted else []
    index = [int(i) for i in index if i >= 0]
    return embedding[index].mean(0) if index else None


@torch.no_grad()
def embed_new_products(
    products: pl.DataFrame,
    product_embedding: Tensor,
    product_ids: IdMap,
    brand_embedding: Tensor,
    brand_ids: IdMap,
    category_embedding: Tensor,
    category_ids: IdMap,
    new_text: Tensor | None = None,
    catalog_text: Tensor | None = None,
    text_neighbours: int = TEXT_NEIGHBOURS,
) -> tuple[Tensor, Tensor]:
    """Vectors for ``products`` (columns ``brand``, ``categories``, ``related``) by the rule above.

    Args:
        new_text, catalog_text: ``[n, t]`` text embeddings of the new products and
            ``[P, t]`` of the model's products (both or neither).

    Returns:
        ``(embedding [m, dim], placed [n] bool)``: one L2-normalised row per product
        that has at least one part, and which of the ``n`` products those are.
    """
    text_mean = None
    if new_text is not None and catalog_text is not None and catalog_text.numel():
        similarity = F.normalize(new_text.float(), dim=-1) @ F.normalize(catalog_text.float(), dim=-1).t()
        nearest = similarity.topk(min(text_neighbours, catalog_text.size(0)), dim=1).indices
        text_mean = product_embedding[nearest].mean(1)
    vectors, placed = [], []
    for row, (brand, categories, related) in enumerate(products.select("brand", "categories", "related").iter_rows()):
        parts = [
            _mean_rows(brand_embedding, brand_ids, [brand] if brand else []),
            _mean_rows(category_embedding, category_ids, list(categories or [])),
            _mean_rows(product_embedding, product_ids, list(related or [])),
            text_mean[row] if text_mean is not None else None,
        ]
        parts = [p for p in parts if p is not None]
        placed.append(bool(parts))
        if parts:
            vectors.append(F.normalize(torch.stack(parts).mean(0), dim=-1))
    embedding = torch.stack(vectors) if vectors else product_embedding.new_zeros(0, product_embedding.size(1))
    return embedding, torch.tensor(placed, dtype=torch.bool)
