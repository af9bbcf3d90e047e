"""The typed graph the model propagates over, as a PyG :class:`HeteroData`.

Node types are ``user``, ``product``, ``brand`` and ``category``. Edge types:

* ``(user, interacts, product)``: the TRAINING interactions only, weighted by event
  weight (duplicates summed). Valid/test interactions never enter the graph.
* ``(product, made_by, brand)``, ``(product, in_category, category)`` and one
  ``(product, <relation>, product)`` per product relation (``also_bought``, ...):
  the knowledge graph, present when ``use_kg``.
* the reverse of each, named ``rev_<relation>``.

Every edge type carries ``edge_index`` ``[2, num_edges]`` and ``edge_weight`` ``[num_edges]``.
The model turns the whole graph into one symmetric, degree-normalised adjacency
(:func:`normalized_adjacency`), so propagation is LightGCN's, over typed edges.

Pure tensor code: no file or network I/O.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

NodeType = str
EdgeType = tuple[str, str, str]

NODE_TYPES: tuple[NodeType, ...] = ("user", "product", "brand", "category")
INTERACTS: EdgeType = ("user", "interacts", "product")


def _check_edges(name: str, src: Tensor, dst: Tensor, num_src: int, num_dst: int) -> None:
    if src.shape != dst.shape or src.dim() != 1:
        raise ValueError(f"edges of {name}: source and target must be 1-d and of equal length (found {tuple(src.shape)} and {tuple(dst.shape)})")
    if src.numel():
        for side, idx, n in (("source", src, num_src), ("target", dst, num_dst)):
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= n:
                raise ValueError(f"edges of {name}: {side} index out of range 0..{n - 1} (found {lo if lo < 0 else hi})")


def build_hetero_graph(
    num_nodes: dict[NodeType, int],
    interactions: tuple[Tensor, Tensor, Tensor | None],
    made_by: tuple[Tensor, Tensor] | None = None,
    in_category: tuple[Tensor, Tensor] | None = None,
    relations: dict[str, tuple[Tensor, Tensor]] | None = None,
    use_kg: bool = True,
    use_user_nodes: bool = True,
    relation_weight: float = 1.0,
) -> HeteroData:
    """Assemble the typed graph from index tensors.

    Args:
        num_nodes: number of nodes per type (``user``, ``product``, ``brand``, ``category``).
        interactions: ``(user_index [n], product_index [n], weight [n] or None)`` — train edges only;
            weights are rescaled to mean 1, so only their ratios matter.
        made_by: ``(product_index [m], brand_index [m])``.
        in_category: ``(product_index [m], category_index [m])``.
        relations: relation name → ``(product_index [m], related_product_index [m])``.
        use_kg: keep the brand, category and relation edges (False: the ablation without KG).
        use_user_nodes: keep the user-product edges (False: only the KG propagates).
        relation_weight: edge weight of product-product relations.

    Returns:
        HeteroData with every node type's ``num_nodes`` and, per edge type and its reverse,
        ``edge_index`` and ``edge_weight``.
    """
    data = HeteroData()
    for node_type in NODE_TYPES:
        data[node_type].num_nodes = int(num_nodes.get(node_type, 0))

    def add(edge_type: EdgeType, src: Tensor, dst: Tensor, weight: Tensor | None) -> None:
        s, rel, d = edge_type
        src, dst = src.long().reshape(-1), dst.long().reshape(-1)
        _check_edges(rel, src, dst, data[s].num_nodes, data[d].num_nodes)
        w = torch.ones(src.numel()) if weight is None else weight.float().reshape(-1)
        # Coalesce duplicates (a user who bought the same product twice → one heavier edge).
        n_dst = max(data[d].num_nodes, 1)
        key = src * n_dst + dst
        uniq, inv = torch.unique(key, return_inverse=True)
        w_sum = torch.zeros(uniq.numel()).index_add_(0, inv, w)
        src, dst = uniq // n_dst, uniq % n_dst
        data[s, rel, d].edge_index = torch.stack([src, dst])
        data[s, rel, d].edge_weight = w_sum
        data[d, f"rev_{rel}", s].edge_index = torch.stack([dst, src])
        data[d, f"rev_{rel}", s].edge_weight = w_sum.clone()

    if use_user_nodes:
        u, p, w = interactions
        if w is not None and w.numel():
            w = w.float() / w.float().mean().clamp(min=1e-12)  # mean 1: event-weight scale never shifts the KG balance
        add(INTERACTS, u, p, w)
    if use_kg:
        if made_by is not None and made_by[0].numel():
            add(("product", "made_by", "brand"), made_by[0], made_by[1], None)
        if in_category is not None and in_category[0].numel():
            add(("product", "in_category", "category"), in_category[0], in_category[1], None)
        for name, (src, dst) in sorted((relations or {}).items()):
            if src.numel():
                keep = src != dst
                add(("product", name, "product"), src[keep], dst[keep], torch.full((int(keep.sum()),), relation_weight))
    return data


def normalized_adjacency(data: HeteroData) -> tuple[Tensor, dict[NodeType, tuple[int, int]]]:
    """One symmetric ``D^-1/2 A D^-1/2`` sparse matrix over all node types.

    Returns:
        ``(adjacency [N, N] sparse CSR, offsets)`` where ``offsets[node_type] = (start, count)``
        places each node type's rows in the homogeneous numbering.
    """
    offsets: dict[NodeType, tuple[int, int]] = {}
    start = 0
    for node_type in NODE_TYPES:
        n = int(data[node_type].num_nodes or 0)
        offsets[node_type] = (start, n)
        start += n
    total = start
    rows, cols, vals = [], [], []
    for edge_type in data.edge_types:
        s, _, d = edge_type
        ei = data[edge_type].edge_index
        rows.append(ei[0] + offsets[s][0])
        cols.append(ei[1] + offsets[d][0])
        vals.append(data[edge_type].edge_weight.float())
    if rows:
        row, col, val = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    else:
        row = col = torch.zeros(0, dtype=torch.long)
        val = torch.zeros(0)
    return symmetric_normalized(row, col, val, total), offsets


def symmetric_normalized(row: Tensor, col: Tensor, value: Tensor, num_nodes: int) -> Tensor:
    """``D^-1/2 A D^-1/2`` as a sparse CSR ``[num_nodes, num_nodes]``, from ``A``'s COO entries.

    ``A`` must already hold both directions of every edge; the degree is the weighted
    row sum, and isolated nodes get all-zero rows.
    """
    degree = torch.zeros(num_nodes).index_add_(0, row, value)
    inv_sqrt = degree.clamp(min=1e-12).pow(-0.5) * (degree > 0)
    value = inv_sqrt[row] * value * inv_sqrt[col]
    coo = torch.sparse_coo_tensor(torch.stack([row, col]), value, (num_nodes, num_nodes), check_invariants=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.coalesce().to_sparse_csr()


def _index_pairs(frame: pl.DataFrame, left: str, right: str, left_map: Any, right_map: Any) -> tuple[Tensor, Tensor]:
    if frame.height == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    a = left_map.indices(frame.get_column(left), strict=False)
    b = right_map.indices(frame.get_column(right), strict=False)
    keep = (a >= 0) & (b >= 0)
    return torch.from_numpy(np.ascontiguousarray(a[keep])), torch.from_numpy(np.ascontiguousarray(b[keep]))


def kg_edges_from_snapshot(snapshot: Any) -> dict[str, Any]:
    """Brand, category and relation edges of a snapshot as index tensors.

    Returns ``{"made_by": (p, b), "in_category": (p, c), "relations": {name: (p, q)}}``.
    """
    tables = snapshot.tables
    made_by = _index_pairs(tables.made_by(), "product_id", "brand", snapshot.product_ids, snapshot.brand_ids)
    in_category = _index_pairs(tables.in_category(), "product_id", "category", snapshot.product_ids, snapshot.category_ids)
    relations: dict[str, tuple[Tensor, Tensor]] = {}
    rel = tables.relations
    if rel.height:
        for name in sorted(rel.get_column("relation").unique().to_list()):
            part = rel.filter(pl.col("relation") == name)
            relations[str(name)] = _index_pairs(
                part, "product_id", "related_product_id", snapshot.product_ids, snapshot.product_ids
            )
    return {"made_by": made_by, "in_category": in_category, "relations": relations}


def graph_from_snapshot(
    snapshot: Any,
    user_index: Tensor,
    product_index: Tensor,
    weight: Tensor | None,
    use_kg: bool = True,
    use_user_nodes: bool = True,
    relation_weight: float = 1.0,
) -> HeteroData:
    """The typed graph of ``snapshot`` with only the given (training) interactions.

    Args:
        snapshot: a :class:`kgrec.snapshot.Snapshot` (``tables`` and the four id maps).
        user_index, product_index, weight: ``[n]`` training interactions (e.g. ``split.train``).
    """
    kg = kg_edges_from_snapshot(snapshot)
    num_nodes = {
        "user": len(snapshot.user_ids),
        "product": len(snapshot.product_ids),
        "brand": len(snapshot.brand_ids),
        "category": len(snapshot.category_ids),
    }
    return build_hetero_graph(
        num_nodes,
        (user_index, product_index, weight),
        made_by=kg["made_by"],
        in_category=kg["in_category"],
        relations=kg["relations"],
        use_kg=use_kg,
        use_user_nodes=use_user_nodes,
        relation_weight=relation_weight,
    )
