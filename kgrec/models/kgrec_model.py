"""The kgrec model: LightGCN-style propagation over a typed product graph, with text fusion.

Layer 0 of every node is a learned ID embedding; a product's also gets a linear
projection of its text embedding (``use_text``), and brands/categories get one of
their names' embeddings. A product without training interactions keeps its ID fixed where
it started (its text start with ``id_init: text``, else zero), so a cold product is placed
by its text, brand, categories and relations alone.

Propagation is parameter-free: ``x_{k+1} = Â x_k`` with ``Â`` the symmetric
degree-normalised adjacency of all typed edges (see :mod:`kgrec.models.hetero_graph`);
the final embedding is the mean over layers ``0..K``.

A user is the recency-weighted mean of the final embeddings of their latest products
(``user_mode="history"``), their propagated ID embedding (``"id"``) or a mix
(``"hybrid"``). The history rule is a pure function (:func:`kgrec.models.history.history_embedding`),
so ranking can update a user from fresh events without retraining.

Scores are cosine similarities; training divides them by a temperature. The losses
(:func:`softmax_loss`, :func:`bpr_loss`) are separate functions, as in PyG's LightGCN.
No file or network I/O here.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from kgrec.models.config import ModelConfig
from kgrec.models.history import Histories, history_embedding
from kgrec.models.hetero_graph import NODE_TYPES, NodeType, normalized_adjacency
from kgrec.models.sequence import SequenceUserEncoder


# --------------------------------------------------------------------------- model
class _SymmetricSpMM(torch.autograd.Function):
    """``A @ x`` for a symmetric sparse ``A``: the backward pass reuses ``A`` (no transpose)."""

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        return None, ctx.adj @ grad


class _SpMM(torch.autograd.Function):
    """``A @ x`` for a sparse ``A`` whose transpose ``A_t`` is given (the backward pass is ``A_t @ grad``)."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj_t = adj_t
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, Tensor]:  # type: ignore[override]
        return None, None, ctx.adj_t @ grad


LIVE_NEIGHBOURS = 32  # one-hop edges per product computed live when a step trains on its own rows


def _csr_pair(row: Tensor, col: Tensor, val: Tensor, shape: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor]:
    """``(M, M^T)`` as sparse CSR on ``device``, for COO entries sorted by row, then column."""
    indptr = torch.zeros(shape[0] + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(row, minlength=shape[0]), 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        matrix = torch.sparse_csr_tensor(indptr, col, val, shape, check_invariants=False)
        return matrix.to(device), matrix.t().to_sparse_csr().to(device)


@torch.no_grad()
def text_principal_components(text: Tensor, dim: int, std: float, chunk: int = 65_536) -> Tensor:
    """``[P, dim]`` the rows of ``text`` ``[P, d]`` on their top ``dim`` principal components,
    scaled so the entries have standard deviation ``std`` (an ID table's starting point).

    Exact PCA from the ``d × d`` covariance, accumulated ``chunk`` rows at a time, so the
    cost is ``O(P d²)`` with no ``P × d`` copy. Columns beyond ``d`` (when ``dim > d``) are
    drawn from ``normal(0, std)``.
    """
    text = text.float()
    mean = text.mean(0)
    cov = text.new_zeros(text.shape[1], text.shape[1])
    for rows in text.split(chunk):
        centred = rows - mean
        cov += centred.t() @ centred
    _, vectors = torch.linalg.eigh(cov.double())  # ascending eigenvalues
    basis = vectors.flip(1)[:, : min(dim, text.shape[1])].float()
    out = torch.cat([(rows - mean) @ basis for rows in text.split(chunk)])
    out = out * (std / out.std().clamp(min=1e-12))
    if dim > basis.shape[1]:
        out = torch.cat([out, torch.randn(text.shape[0], dim - basis.shape[1]) * std], 1)
    return out


class KgrecModel(nn.Module):
    """Typed-graph propagation with text fusion; see the module docstring.

    Args:
        graph: the typed graph (:func:`kgrec.models.hetero_graph.build_hetero_graph`).
        config: architecture settings.
        product_text: ``[num_products, text_dim]`` text embeddings (used when ``config.use_text``).
        brand_text: ``[num_brands, text_dim]`` brand-name embeddings (optional).
        category_text: ``[num_categories, text_dim]`` category-path embeddings (optional).
        product_has_id: ``[num_products]`` bool, which products' ID embeddings are trained
            (those with training interactions; default all); the others stay fixed at their
            start (:meth:`_untrained_ids`).
        event_weight: ``[E]`` the weight of each event type (``ingest.event_weights`` in
            ``EVENT_TYPES`` order), for the transformer user encoder's event types
            (default: ingest's default weights).
    """

    def __init__(
        self,
        graph: HeteroData,
        config: ModelConfig,
        product_text: Tensor | None = None,
        brand_text: Tensor | None = None,
        category_text: Tensor | None = None,
        product_has_id: Tensor | None = None,
        event_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_nodes: dict[NodeType, int] = {t: int(graph[t].num_nodes or 0) for t in NODE_TYPES}
        adj, self.offsets = normalized_adjacency(graph)
        self._adj = adj
        dim = config.dim
        self.embedding = nn.ModuleDict({t: nn.Embedding(max(self.num_nodes[t], 1), dim) for t in NODE_TYPES})
        for emb in self.embedding.values():
            nn.init.normal_(emb.weight, std=0.1)
        if config.user_mode == "history":
            self.embedding["user"].weight.requires_grad_(False)  # users only relay (see layer0)
        num_products = self.num_nodes["product"]
        has_id = torch.ones(num_products, dtype=torch.bool) if product_has_id is None else product_has_id.bool()
        self.register_buffer("product_has_id", has_id.reshape(-1))
        self.text_proj: nn.Linear | None = None
        self.name_proj: nn.Linear | None = None
        if config.use_text and product_text is not None and product_text.numel():
            if product_text.shape[0] != num_products:
                raise ValueError(f"product_text must have {num_products} rows (one per product), found {product_text.shape[0]}")
            self.register_buffer("product_text", product_text.float())
            self.text_proj = nn.Linear(product_text.shape[1], dim, bias=False)
            nn.init.normal_(self.text_proj.weight, std=0.1 / product_text.shape[1] ** 0.5 * 4)
            names = [t for t in (brand_text, category_text) if t is not None and t.numel()]
            if names:
                self.name_proj = nn.Linear(names[0].shape[1], dim, bias=False)
                nn.init.normal_(self.name_proj.weight, std=0.1 / names[0].shape[1] ** 0.5 * 4)
        else:
            self.register_buffer("product_text", None)
        if self.ids_start_from_text:
            with torch.no_grad():
                self.embedding["product"].weight.copy_(text_principal_components(self.product_text, dim, std=config.text_init_std))
        kg_on = config.use_text and self.name_proj is not None
        self.register_buffer("brand_text", brand_text.float() if kg_on and brand_text is not None and brand_text.numel() else None)
        self.register_buffer(
            "category_text", category_text.float() if kg_on and category_text is not None and category_text.numel() else None
        )
        self.user_encoder: SequenceUserEncoder | None = None
        if config.sequence_encoder:
            if event_weight is None:
                from kgrec.ingest.config import DEFAULT_EVENT_WEIGHTS
                from kgrec.ingest.tables import EVENT_TYPES

                event_weight = torch.tensor([DEFAULT_EVENT_WEIGHTS.get(e, 1.0) for e in EVENT_TYPES])
            self.user_encoder = SequenceUserEncoder(
                dim, config.sequence_length, event_weight, config.encoder_blocks, config.encoder_heads,
                config.encoder_dropout, config.time_gaps, config.encoder_block,
            )
        length = self.history_length
        self.register_buffer("history_index", torch.zeros(self.num_nodes["user"], length, dtype=torch.long))
        self.register_buffer("history_weight", torch.zeros(self.num_nodes["user"], length))
        # Event times only for an encoder that reads time gaps (at 1M users a window of times is 400 MB).
        reads_times = self.user_encoder is not None and self.user_encoder.time_gaps
        self.register_buffer(
            "history_time", torch.zeros(self.num_nodes["user"], length, dtype=torch.long) if reads_times else None
        )
        # Set by cache_propagation (training only; never saved with the model).
        self._one_hop_matrix: tuple[Tensor, Tensor] | None = None
        self._overflow_matrix: Tensor | None = None
        self._text_context: Tensor | None = None
        self._name_context: Tensor | None = None
        self._id_context: Tensor | None = None
        # Set by sparse_gradients(): a step's ID-row gathers give row-sparse gradients.
        self._sparse_rows = False

    @property
    def ids_start_from_text(self) -> bool:
        """Whether product IDs start from their texts (``id_init: text`` on a model with product
        texts): the start training moves, and where a product without events stays."""
        return self.config.id_init == "text" and self.product_text is not None

    @property
    def history_length(self) -> int:
        """Events per stored history: ``sequence_length`` for the transformer, else ``history_length``."""
        return self.config.sequence_length if self.user_encoder is not None else self.config.history_length

    @property
    def history_decay(self) -> float:
        """Recency decay of stored history weights (1: the transformer reads raw event weights)."""
        return 1.0 if self.user_encoder is not None else self.config.recency_decay

    # ---- graph
    @property
    def adjacency(self) -> Tensor:
        """``[N, N]`` normalised sparse adjacency over all node types, on the model's device."""
        device = self.embedding["product"].weight.device
        if self._adj.device != device:
            self._adj = self._adj.to(device)
        return self._adj

    def set_histories(self, histories: Histories) -> None:
        """Store every user's ``[num_users, L]`` history window (:meth:`Histories.latest`, and its times)."""
        index, weight = histories.latest(self.history_length, self.history_decay)
        self.history_index = index.to(self.history_index.device)
        self.history_weight = weight.to(self.history_weight.device)
        if self.history_time is not None:
            self.history_time = histories.latest_timestamps(self.history_length).to(self.history_time.device)

    def layer0(self, with_text: bool = True) -> Tensor:
        """``[N, dim]`` input embeddings of all nodes, in the adjacency's numbering
        (``with_text=False``: the ID embeddings alone)."""
        parts = []
        for t in NODE_TYPES:
            n = self.num_nodes[t]
            if t == "user" and self.config.user_mode == "history":
                # Users only relay in history mode (their own vector comes from history): zeros,
                # not the table, so a training step neither grads nor updates a row per user.
                parts.append(self.embedding[t].weight.new_zeros(n, self.config.dim))
                continue
            x = self.embedding[t].weight[:n]
            if t == "product":
                x = self._untrained_ids(x, self.product_has_id)
                if with_text and self.text_proj is not None:
                    x = x + self.text_proj(self.product_text)
            elif t == "brand" and with_text and self.brand_text is not None:
                x = x + self.name_proj(self.brand_text)
            elif t == "category" and with_text and self.category_text is not None:
                x = x + self.name_proj(self.category_text)
            parts.append(x)
        return torch.cat(parts)

    def propagate(self) -> dict[NodeType, Tensor]:
        """Final embeddings of every node type: ``{type: [num_nodes(type), dim]}`` (mean over layers)."""
        x = self.layer0()
        out = x
        adj = self.adjacency
        for _ in range(self.config.layers):
            x = _SymmetricSpMM.apply(adj, x)
            out = out + x
        out = out / (self.config.layers + 1)
        return {t: out[s : s + n] for t, (s, n) in self.offsets.items()}

    # ---- cached propagation: training whose step cost does not grow with the graph
    def cache_propagation(self, block: int = 64, live_neighbours: int | None = None) -> None:
        """Prepare :meth:`product_vectors`, the training-time form of :meth:`propagate`.

        Propagation is linear and parameter-free, so a product's final vector splits into
        ``(1/(K+1)) Σ_k (Â^k X0)_p`` terms that cost very different amounts:

        - the text parts, ``(Σ_k Â^k T)_p W``: ``T`` (product texts, brand and category
          names) is fixed, so ``Σ_k Â^k T`` is computed once here and ``W`` (the
          projections) still gets its exact gradient;
        - the product's own ID embedding and its one-hop neighbours' (brands, categories,
          related products; users hold zeros in ``history`` mode), live with gradients, at
          the cost of the product's own edges: its ``live_neighbours`` strongest edges (by
          normalised weight). A hub (a popular product that thousands of others relate to)
          has a degree that grows with the catalog; its remaining edges, each of tiny weight,
          join the refreshed terms below, so a step's cost stays bounded;
        - the deeper ID terms (``k >= 2``: co-interacted products, other products of the
          brand), which reach most of the graph: a no-grad propagation refreshed by
          :meth:`refresh_context` (once per epoch in training).

        A step then costs what its products cost, not what the graph costs, so an epoch
        does not pay for the graph. With a fresh context, :meth:`product_vectors` equals
        ``propagate()["product"]``; only the deeper ID terms lag within an epoch and pass
        no gradient to the neighbours they come from.

        Args:
            block: columns of the text features propagated at once (bounds memory to
                ``N × block`` floats per layer).
            live_neighbours: one-hop edges per product computed live, with gradients (None:
                all; training on sampled rows passes :data:`LIVE_NEIGHBOURS`).
        """
        if self.config.user_mode != "history":
            raise ValueError("cached propagation needs user_mode 'history' (users hold no ID embedding)")
        adj = self.adjacency.to("cpu")
        start, count = self.offsets["product"]
        user_start, num_users = self.offsets["user"]
        crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
        row = torch.repeat_interleave(torch.arange(adj.shape[0]), crow[1:] - crow[:-1])
        keep = (row >= start) & (row < start + count) & ~((col >= user_start) & (col < user_start + num_users))
        row, col, val = row[keep] - start, col[keep], val[keep]
        live = torch.ones(row.numel(), dtype=torch.bool)
        if live_neighbours is not None:
            if live_neighbours < 1:
                raise ValueError(f"live_neighbours must be at least 1 (None: every edge); found {live_neighbours}.")
            # Rank each product's edges strongest first; the first `live_neighbours` stay live.
            # The edges keep their CSR order (rows, then columns), which sparse kernels expect.
            order = torch.argsort(-val, stable=True)
            order = order[torch.argsort(row[order], stable=True)]
            first = torch.zeros(count + 1, dtype=torch.long)
            first[1:] = torch.cumsum(torch.bincount(row, minlength=count), 0)
            live[order] = torch.arange(row.numel()) - first[row[order]] < live_neighbours
        device = self.embedding["product"].weight.device
        self._one_hop_matrix = _csr_pair(row[live], col[live], val[live], (count, adj.shape[0]), device)
        rest = ~live
        self._overflow_matrix = (
            _csr_pair(row[rest], col[rest], val[rest], (count, adj.shape[0]), device)[0] if rest.any() else None
        )
        self._text_context = self._propagate_fixed(self._text_features("product"), block)
        self._name_context = self._propagate_fixed(self._text_features("name"), block)
        self.refresh_context()

    def _text_features(self, kind: str) -> Tensor | None:
        """``[N, text_dim]`` the product texts (``kind="product"``) or brand and category names
        (``"name"``) at their nodes' rows, zeros elsewhere; None when the model has none."""
        if kind == "product":
            parts = {"product": self.product_text} if self.text_proj is not None else {}
        else:
            parts = {t: getattr(self, f"{t}_text") for t in ("brand", "category") if getattr(self, f"{t}_text") is not None}
        if not parts:
            return None
        first = next(iter(parts.values()))
        out = first.new_zeros(sum(self.num_nodes.values()), first.shape[1])
        for t, x in parts.items():
            s, n = self.offsets[t]
            out[s : s + n] = x
        return out

    @torch.no_grad()
    def _propagate_fixed(self, x: Tensor | None, block: int) -> Tensor | None:
        """``[num_products, d]`` product rows of ``(1/(K+1)) Σ_{k=0..K} Â^k x``, ``block`` columns at a time."""
        if x is None:
            return None
        start, count = self.offsets["product"]
        adj = self.adjacency
        out = []
        for cols in x.split(block, dim=1):
            layer = cols.to(adj.device)
            total = layer[start : start + count].clone()
            for _ in range(self.config.layers):
                layer = adj @ layer
                total += layer[start : start + count]
            out.append(total / (self.config.layers + 1))
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def refresh_context(self) -> None:
        """Recompute the deeper (``k >= 2``) ID terms of :meth:`product_vectors` from the
        current ID embeddings: one propagation of the whole graph, without gradients."""
        start, count = self.offsets["product"]
        layer = self.layer0(with_text=False)
        context = torch.zeros(count, layer.shape[1], device=layer.device)
        if self._overflow_matrix is not None and self.config.layers >= 1:
            context += self._overflow_matrix @ layer  # the one-hop edges beyond the live ones
        adj = self.adjacency
        for k in range(1, self.config.layers + 1):
            layer = adj @ layer
            if k >= 2:
                context += layer[start : start + count]
        self._id_context = context / (self.config.layers + 1)

    def product_vectors(self, rows: Tensor | None = None) -> Tensor:
        """``[len(rows), dim]`` final product vectors (all products when ``rows`` is None) by
        cached propagation (:meth:`cache_propagation`); gradients reach the ID embeddings of
        the products and their one-hop neighbours, and the text projections."""
        layers, start = self.config.layers, self.offsets["product"][0]
        every = rows is None  # one sparse product over every node; a subset gathers only its rows' edges
        if every:
            ids = self.layer0(with_text=False)
            out = ids[start : start + self.num_nodes["product"]]
            if layers >= 1:
                out = (out + _SpMM.apply(*self._one_hop_matrix, ids)) / (layers + 1) + self._id_context
        else:
            rows = rows.to(self.embedding["product"].weight.device)
            out = self._id_rows(start + rows)
            if layers >= 1:
                one_hop = self._one_hop_matrix[0]
                indptr, col, val = one_hop.crow_indices(), one_hop.col_indices(), one_hop.values()
                lengths = indptr[rows + 1] - indptr[rows]
                first = torch.repeat_interleave(indptr[rows] - torch.cumsum(lengths, 0) + lengths, lengths)
                edge = first + torch.arange(int(lengths.sum()), device=rows.device)
                target = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lengths)
                neighbours = val[edge].unsqueeze(-1) * self._id_rows(col[edge])
                out = (out + torch.zeros_like(out).index_add(0, target, neighbours)) / (layers + 1)
                out = out + self._id_context[rows]
        if self._text_context is not None:
            out = out + self.text_proj(self._text_context if every else self._text_context[rows])
        if self._name_context is not None:
            out = out + self.name_proj(self._name_context if every else self._name_context[rows])
        return out

    def sparse_gradients(self, enabled: bool = True) -> list[nn.Parameter]:
        """Let :meth:`product_vectors` ``(rows)`` give the ID tables row-sparse gradients, and
        return the tables that get them (to be stepped by :class:`kgrec.train.loop.RowAdam`).

        A dense gradient of a table is as large as the table: at a million products, zeroing it
        and stepping Adam over every row would cost more than the step's own products. Only
        the rows a step gathers then get a gradient and an update ("lazy" Adam). Applies to
        cached propagation with a product subset, the path a large catalog trains on; the
        whole-catalog forms (:meth:`layer0`, :meth:`propagate`) keep dense gradients and must
        not be used while this is on.
        """
        self._sparse_rows = enabled
        return [e.weight for t, e in self.embedding.items() if e.weight.requires_grad] if enabled else []

    def _id_rows(self, index: Tensor) -> Tensor:
        """``[len(index), dim]`` rows of :meth:`layer0` ``(with_text=False)`` for nodes in the
        adjacency's numbering, gathered without building every node's row (a training step's hot path)."""
        out = self.embedding["product"].weight.new_zeros(index.numel(), self.config.dim)
        for t in NODE_TYPES:
            s, n = self.offsets[t]
            if t == "user" and self.config.user_mode == "history":
                continue  # users relay only: zeros (see layer0)
            inside = (index >= s) & (index < s + n)
            local = index[inside] - s
            x = F.embedding(local, self.embedding[t].weight, sparse=self._sparse_rows)
            if t == "product":
                x = self._untrained_ids(x, self.product_has_id[local])
            out = out.index_put((inside.nonzero().squeeze(-1),), x)
        return out

    def _untrained_ids(self, ids: Tensor, has_id: Tensor) -> Tensor:
        """Product ID rows ``ids`` ``[n, dim]`` with the rows of products without training
        events (``has_id`` False) fixed: at their text start with ``id_init: text``, so a new
        product sits where a product with few events starts (and rare products barely move
        from there); else at zero, since a random start says nothing. Either way no gradient
        reaches them, so being a softmax negative cannot move them."""
        keep = has_id.unsqueeze(-1)
        if self.ids_start_from_text:
            return torch.where(keep, ids, ids.detach())
        return ids * keep.to(ids.dtype)

    # ---- users
    def user_vectors(self, nodes: dict[NodeType, Tensor], user_index: Tensor, history_index: Tensor | None = None,
                     history_weight: Tensor | None = None, history_time: Tensor | None = None) -> Tensor:
        """``[B, dim]`` user vectors; histories default to the stored ones of ``user_index``."""
        mode = self.config.user_mode
        if history_index is None:
            history_index, history_weight = self.history_index[user_index], self.history_weight[user_index]
            history_time = None if self.history_time is None else self.history_time[user_index]
        if mode == "id":
            return nodes["user"][user_index]
        if self.user_encoder is not None:
            return self.user_encoder.user_vectors(nodes["product"], history_index, history_weight, history_time)
        hist = history_embedding(F.normalize(nodes["product"], dim=-1), history_index, history_weight)
        if mode == "history":
            return hist
        a = self.config.history_weight
        return a * F.normalize(hist, dim=-1) + (1 - a) * F.normalize(nodes["user"][user_index], dim=-1)

    def get_embedding(self, nodes: dict[NodeType, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Final ``(users [num_users, dim], products [num_products, dim])``, L2-normalised.

        Users come from their stored training histories (:meth:`set_histories`)."""
        nodes = self.propagate() if nodes is None else nodes
        users = torch.arange(self.num_nodes["user"], device=nodes["product"].device)
        return F.normalize(self.user_vectors(nodes, users), dim=-1), F.normalize(nodes["product"], dim=-1)


# --------------------------------------------------------------------------- losses
def softmax_loss(
    user_vec: Tensor,
    product_emb: Tensor,
    target: Tensor,
    temperature: float,
    negatives: Tensor | None = None,
    in_batch: bool = True,
    candidates: Tensor | None = None,
) -> Tensor:
    """Cross-entropy of the target product against the others, on cosine / temperature.

    Args:
        user_vec: ``[B, dim]``.
        product_emb: ``[num_products, dim]`` final product embeddings.
        target: ``[B]`` product indices.
        negatives: ``[M]`` random negatives shared by the batch (None: every product is
            a candidate, i.e. the full softmax).
        in_batch: with ``negatives``, also use the other rows' targets as negatives.
        candidates: ``[num_products]`` bool, with the full softmax: the products that may
            be negatives (None: all). Products nobody interacted with are left out in
            training: never seen is not disliked, and as permanent negatives they would be
            pushed away from every user, so a new product could never be recommended.
    """
    u = F.normalize(user_vec, dim=-1)
    p = F.normalize(product_emb, dim=-1)
    if negatives is None:
        logits = u @ p.t() / temperature
        if candidates is not None:
            logits = logits.masked_fill(~candidates.unsqueeze(0), float("-inf"))
        return F.cross_entropy(logits, target)
    pos = (u * p[target]).sum(-1, keepdim=True) / temperature
    cand = torch.cat([target, negatives]) if in_batch else negatives
    logits = u @ p[cand].t() / temperature
    # A candidate equal to the row's own target is not a negative.
    logits = logits.masked_fill(cand.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
    return F.cross_entropy(torch.cat([pos, logits], dim=1), torch.zeros_like(target))


def bpr_loss(user_vec: Tensor, product_emb: Tensor, target: Tensor, negative: Tensor, temperature: float) -> Tensor:
    """BPR on cosine / temperature: ``-log σ(s(u, pos) - s(u, neg))``, ``negative`` ``[B]``."""
    u = F.normalize(user_vec, dim=-1)
    p = F.normalize(product_emb, dim=-1)
    diff = ((u * p[target]).sum(-1) - (u * p[negative]).sum(-1)) / temperature
    return F.softplus(-diff).mean()
