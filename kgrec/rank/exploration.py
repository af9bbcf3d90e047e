"""The knowledge-graph exploration bonus: how far an unseen product sits from a user's history.

:class:`ExplorationGraph` prepares the catalog structure (brands, the category tree)
once; :meth:`ExplorationGraph.bonus` then scores a batch of users at once, for every
product or only for a ranking's candidate pool. Tensors in and out, numpy inside; no I/O.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np
import polars as pl
import torch
from torch import Tensor

from kgrec.rank.config import ExplorationLevels

if TYPE_CHECKING:
    from kgrec.snapshot.snapshot import Snapshot

CategoryLists = Union[Tensor, Sequence[Union[Tensor, Sequence[int]]], tuple[Tensor, Tensor]]
"""Categories per product: ``[P, max_c]`` padded with ``-1``, ``P`` index lists, or ``(product_index, category_index)`` pairs."""

# --------------------------------------------------------------------------- exploration
@dataclass(frozen=True)
class ExplorationGraph:
    """The catalog structure :func:`exploration_bonus` reads, prepared once.

    Build it with :meth:`build`; :meth:`bonus` then scores a whole batch of users at
    once (index arithmetic on ``[b, C]`` and ``[b, B]`` tables, no per-user Python loop),
    for every product or only for given ones (e.g. a ranking's candidate pool).

    The rule, for a product the user has **not** seen (a seen product always gets 0):

    ====================================================  ==================================
    the product is …                                      bonus (:class:`ExplorationLevels`)
    ====================================================  ==================================
    in a touched category, by a new brand (or no brand)   ``new_brand_same_category`` (1.0)
    in a touched category, by a touched brand             ``familiar`` (0.25)
    otherwise the highest of:
    in a nearby category (sibling, parent or child of a   ``nearby_category`` (0.75)
    touched one)
    by a touched brand                                    ``known_brand_new_category`` (0.5)
    by a neighbour brand (sells in a touched category,    ``neighbour_brand`` (0.25)
    or linked to a touched brand by ``brand_neighbours``)
    none of these (far from the whole history)            0
    ====================================================  ==================================

    "Touched" means: a category listed on, or the brand of, a product the user has seen.
    Top-level categories (no parent) are not siblings of each other.
    """

    num_products: int
    num_brands: int
    num_categories: int
    product_brand: Tensor  # [P] long; num_brands (an always-empty slot) = no brand
    product_categories: Tensor  # [P, max_c] long; num_categories (an always-empty slot) = padding
    category_parent: Tensor  # [C] long; num_categories = top level
    brand_in_category: Tensor  # sparse CSR [B, C] float: 1 where a brand sells in a category
    brand_link: Tensor | None  # sparse CSR [B, B] float, symmetric, or None
    levels: ExplorationLevels

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        product_brand: Tensor,
        product_categories: CategoryLists,
        category_parent: Tensor,
        brand_neighbours: Tensor | None = None,
        num_brands: int | None = None,
        levels: ExplorationLevels | None = None,
    ) -> ExplorationGraph:
        """Prepare the catalog structure.

        Args:
            product_brand: ``[P]`` long brand index per product, ``-1`` = no brand.
            product_categories: the categories listed on each product: ``[P, max_c]`` long
                padded with ``-1``, a sequence of ``P`` index lists, or a
                ``(product_index [n], category_index [n])`` pair of tensors.
            category_parent: ``[C]`` long parent category index, ``-1`` for a top-level one.
            brand_neighbours: optional ``[2, E]`` long brand-brand edges (read both ways),
                e.g. brands whose products are often bought together.
            num_brands: ``B``; default one more than the largest brand index given.
            levels: the bonus per kind of closeness; default :class:`ExplorationLevels`.
        """
        product_brand = product_brand.long().reshape(-1)
        num_products = product_brand.numel()
        category_parent = category_parent.long().reshape(-1)
        num_categories = category_parent.numel()
        rows, cols = _category_pairs(product_categories, num_products)
        if cols.numel() and int(cols.max()) >= num_categories:
            raise ValueError(
                f"product_categories holds category index {int(cols.max())}, but category_parent "
                f"has only {num_categories} entries (one per category)."
            )
        if num_categories and int(category_parent.max()) >= num_categories:
            raise ValueError(
                f"category_parent holds {int(category_parent.max())}, beyond its {num_categories} categories."
            )
        largest = int(product_brand.max()) if num_products else -1
        if brand_neighbours is not None and brand_neighbours.numel():
            if brand_neighbours.dim() != 2 or brand_neighbours.shape[0] != 2:
                raise ValueError(
                    f"brand_neighbours must be a [2, E] edge index; found shape {tuple(brand_neighbours.shape)}."
                )
            largest = max(largest, int(brand_neighbours.max()))
        num_brands = num_brands if num_brands is not None else largest + 1
        if largest >= num_brands:
            raise ValueError(f"brand indices go up to {largest} but num_brands is {num_brands}.")

        slot = rows.new_zeros(rows.shape)
        if rows.numel():  # position of each (product, category) pair within its product's row
            starts = torch.searchsorted(rows, rows, right=False)
            slot = torch.arange(rows.numel()) - starts
        width = int(slot.max()) + 1 if rows.numel() else 1
        padded = torch.full((num_products, width), num_categories, dtype=torch.long)
        padded[rows, slot] = cols
        branded = product_brand[rows] >= 0
        brand_in_category = _sparse(product_brand[rows][branded], cols[branded], (num_brands, num_categories))
        brand_link = None
        if brand_neighbours is not None and brand_neighbours.numel():
            a, b = brand_neighbours.long()
            brand_link = _sparse(torch.cat([a, b]), torch.cat([b, a]), (num_brands, num_brands))
        return cls(
            num_products=num_products,
            num_brands=num_brands,
            num_categories=num_categories,
            product_brand=torch.where(product_brand >= 0, product_brand, num_brands),
            product_categories=padded,
            category_parent=torch.where(category_parent >= 0, category_parent, num_categories),
            brand_in_category=brand_in_category,
            brand_link=brand_link,
            levels=levels or ExplorationLevels(),
        )

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Snapshot,
        brand_neighbours: Tensor | None = None,
        levels: ExplorationLevels | None = None,
        extra_products: pl.DataFrame | None = None,
    ) -> ExplorationGraph:
        """The catalog structure of a snapshot, indexed like its id maps.

        Products are ``snapshot.product_ids``, then the rows of ``extra_products`` (columns
        ``brand``, ``categories``: products added after the snapshot); brands are
        ``snapshot.brand_ids``, categories ``snapshot.category_ids`` (every path and its
        ancestors). Brands and categories the snapshot does not know are left out.
        """
        products = snapshot.tables.products.select("brand", "categories")
        if extra_products is not None:
            products = pl.concat([products, extra_products.select(products.columns)], how="vertical_relaxed")
        brand = snapshot.brand_ids.indices(products.get_column("brand").fill_null(""), strict=False).copy()
        listed = products.select("categories").with_row_index("row").explode("categories").drop_nulls("categories")
        category = snapshot.category_ids.indices(listed.get_column("categories"), strict=False)
        known = category >= 0
        rows = torch.from_numpy(listed.get_column("row").to_numpy().astype("int64")[known])
        cols = torch.from_numpy(category[known].copy())
        parents = snapshot.tables.categories().get_column("parent").fill_null("")
        parent = snapshot.category_ids.indices(parents, strict=False).copy()
        return cls.build(
            torch.from_numpy(brand),
            (rows, cols),
            torch.from_numpy(parent),
            brand_neighbours,
            num_brands=len(snapshot.brand_ids),
            levels=levels,
        )

    @torch.no_grad()
    def bonus(self, seen_indptr: Tensor, seen_index: Tensor, product_index: Tensor | None = None) -> Tensor:
        """Exploration bonus for a batch of users.

        Args:
            seen_indptr: ``[b + 1]`` long, CSR row pointers: user ``i`` saw
                ``seen_index[seen_indptr[i]:seen_indptr[i + 1]]``.
            seen_index: ``[nnz]`` long product indices.
            product_index: ``[b, m]`` long, the products to score per user; default all ``P``.

        Returns:
            ``[b, m]`` (or ``[b, P]``) float32 in ``[0, 1]``.
        """
        # numpy: some sixty small steps for a served request's pool, where torch's cost per call
        # was most of the 0.7 ms they took.
        indptr, seen = seen_indptr.long().cpu().numpy(), seen_index.long().cpu().numpy()
        b, num_categories, num_brands = indptr.size - 1, self.num_categories, self.num_brands
        user = np.repeat(np.arange(b), np.diff(indptr))
        if product_index is None:
            asked = np.broadcast_to(np.arange(self.num_products), (b, self.num_products))
        else:
            asked = product_index.long().cpu().numpy()
        product_categories = self.product_categories.numpy()
        category_parent, product_brand = self.category_parent.numpy(), self.product_brand.numpy()

        # Categories: touched, and one step away in the tree. One extra, always-False
        # column (index C) stands for "no category" / "no parent".
        touched = np.zeros((b, num_categories + 1), dtype=bool)
        touched[user[:, None], product_categories[seen]] = True
        touched[:, num_categories] = False
        parents = np.zeros((b, num_categories + 1), dtype=bool)  # the parents of touched categories
        touched_row, touched_category = np.nonzero(touched[:, :num_categories])
        parents[touched_row, category_parent[touched_category]] = True
        parents[:, num_categories] = False
        nearby = np.zeros((b, num_categories + 1), dtype=bool)
        # A parent of a touched one, a child of one (its parent is touched), or a sibling (its
        # parent is a touched one's).
        children, siblings = touched[:, category_parent], parents[:, category_parent]
        nearby[:, :num_categories] = parents[:, :num_categories] | children | siblings

        # Brands: touched, and neighbours (sell in a touched category, or linked). Column B = no brand.
        touched_brand = np.zeros((b, num_brands + 1), dtype=bool)
        touched_brand[user, product_brand[seen]] = True
        touched_brand[:, num_brands] = False

        m = asked.shape[1]
        categories = product_categories[asked].reshape(b, -1)  # [b, m * max_c]
        in_touched = np.take_along_axis(touched, categories, 1).reshape(b, m, -1).any(-1)
        in_nearby = np.take_along_axis(nearby, categories, 1).reshape(b, m, -1).any(-1)
        brand = product_brand[asked]
        brand_known = np.take_along_axis(touched_brand, brand, 1)
        # The rows of the brands asked about, not a product with the whole [B, C] matrix: a pool
        # names a few hundred brands.
        brand_neighbour = _row_meets(self.brand_in_category, brand, touched)
        if self.brand_link is not None:
            brand_neighbour |= _row_meets(self.brand_link, brand, touched_brand)
        brand_neighbour &= ~brand_known

        lv = self.levels
        inside = np.where(brand_known, lv.familiar, lv.new_brand_same_category)
        outside = np.maximum(
            np.where(in_nearby, lv.nearby_category, 0.0),
            np.maximum(
                np.where(brand_known, lv.known_brand_new_category, 0.0),
                np.where(brand_neighbour, lv.neighbour_brand, 0.0),
            ),
        )
        out = np.where(in_touched, inside, outside).astype(np.float32)
        asked_key = np.arange(b)[:, None] * self.num_products + asked
        out[np.isin(asked_key, user * self.num_products + seen)] = 0.0
        return torch.from_numpy(out).to(seen_index.device)


@torch.no_grad()
def exploration_bonus(
    seen_products: Tensor,
    product_brand: Tensor,
    product_categories: CategoryLists,
    category_parent: Tensor,
    brand_neighbours: Tensor | None = None,
    levels: ExplorationLevels | None = None,
) -> Tensor:
    """Bonus for unseen products next to one user's history in the knowledge graph.

    See :class:`ExplorationGraph` for the rule (same category but new brand > nearby
    category > known brand elsewhere > neighbour brand > far: 0; seen: 0). To score
    many users, build an :class:`ExplorationGraph` once and call its ``bonus``.

    Args:
        seen_products: ``[n]`` long, products the user interacted with.
        product_brand: ``[P]`` long, ``-1`` = no brand.
        product_categories: ``[P, max_c]`` long padded with ``-1``, ``P`` index lists, or
            ``(product_index, category_index)`` pairs.
        category_parent: ``[C]`` long, ``-1`` = top level.
        brand_neighbours: optional ``[2, E]`` brand-brand edges.
        levels: the bonus levels; default :class:`ExplorationLevels`.

    Returns:
        ``[P]`` float32 in ``[0, 1]``.
    """
    graph = ExplorationGraph.build(product_brand, product_categories, category_parent, brand_neighbours, levels=levels)
    seen = seen_products.long().reshape(-1)
    if seen.numel() and (int(seen.min()) < 0 or int(seen.max()) >= graph.num_products):
        raise ValueError(f"seen_products must lie in 0..{graph.num_products - 1}; found {seen.min()}..{seen.max()}.")
    return graph.bonus(torch.tensor([0, seen.numel()]), seen)[0]


# --------------------------------------------------------------------------- helpers
def _row_meets(matrix: Tensor, row_index: np.ndarray, marked: np.ndarray) -> np.ndarray:
    """``[b, m]`` bool: whether row ``row_index[i, j]`` of the sparse CSR ``matrix [R, N]``
    has an entry in a column that ``marked[i]`` (``[b, >= N]`` bool) marks.
    Row index ``R`` (one past the last) stands for an empty row."""
    b, m = row_index.shape
    crow, col = matrix.crow_indices().numpy(), matrix.col_indices().numpy()
    num_rows = crow.size - 1
    flat = row_index.reshape(-1)
    start, end = crow[np.minimum(flat, num_rows)], crow[np.minimum(flat + 1, num_rows)]
    count = end - start
    entry = np.repeat(np.arange(flat.size), count)  # the (i, j) slot of each entry
    offset = np.arange(entry.size) - (np.cumsum(count) - count)[entry]
    hit = marked[entry // m, col[start[entry] + offset]]
    found = np.zeros(flat.size, dtype=bool)
    found[entry[hit]] = True
    return found.reshape(b, m)


def _category_pairs(
    product_categories: CategoryLists, num_products: int
) -> tuple[Tensor, Tensor]:
    """``(product_index, category_index)`` pairs, sorted by product, from any :data:`CategoryLists` form."""
    if isinstance(product_categories, tuple) and len(product_categories) == 2:
        rows, cols = (torch.as_tensor(part, dtype=torch.long).reshape(-1) for part in product_categories)
        if rows.numel() != cols.numel() or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= num_products)):
            raise ValueError(
                "product_categories as (product_index, category_index) pairs needs two equally long index "
                f"tensors with product indices in 0..{num_products - 1}."
            )
        keep = cols >= 0
        order = torch.argsort(rows[keep], stable=True)
        return rows[keep][order], cols[keep][order]
    if isinstance(product_categories, Tensor):
        padded = product_categories.long()
        if padded.dim() == 1:
            padded = padded.unsqueeze(1)
        if padded.shape[0] != num_products:
            raise ValueError(
                f"product_categories has {padded.shape[0]} rows; expected one per product ({num_products})."
            )
        rows, slot = (padded >= 0).nonzero(as_tuple=True)
        return rows, padded[rows, slot]
    if len(product_categories) != num_products:
        raise ValueError(
            f"product_categories has {len(product_categories)} entries; expected one per product ({num_products})."
        )
    parts = [torch.as_tensor(c, dtype=torch.long).reshape(-1) for c in product_categories]
    lengths = torch.tensor([p.numel() for p in parts], dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(num_products), lengths)
    cols = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    keep = cols >= 0
    return rows[keep], cols[keep]


def _sparse(rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR ``shape`` matrix with 1.0 at each distinct ``(rows, cols)``.

    CSR: :meth:`ExplorationGraph.bonus` reads the rows of the brands it is asked about."""
    key = torch.unique(rows.long() * shape[1] + cols.long())
    index = torch.stack([key // shape[1], key % shape[1]])
    coo = torch.sparse_coo_tensor(index, torch.ones(key.numel()), shape, check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()