"""The typed graph and the kgrec model on tiny planted graphs (features = node ids)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kgrec.models.config import ModelConfig
from kgrec.models.hetero_graph import INTERACTS, build_hetero_graph, normalized_adjacency
from kgrec.models.history import Histories, history_embedding
from kgrec.models.kgrec_model import KgrecModel, bpr_loss, softmax_loss, text_principal_components

# 3 users, 5 products (p4 has no interactions: cold), 2 brands, 2 categories.
NUM_NODES = {"user": 3, "product": 5, "brand": 2, "category": 2}
INTERACTIONS = (torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 3]), None)
MADE_BY = (torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 0, 1, 1, 1]))
IN_CATEGORY = (torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 0, 0, 1, 1]))
RELATIONS = {"also_bought": (torch.tensor([3]), torch.tensor([4]))}


def planted_graph(**kwargs):
    return build_hetero_graph(NUM_NODES, INTERACTIONS, MADE_BY, IN_CATEGORY, RELATIONS, **kwargs)


def id_text(num_products: int = 5, dim: int = 8) -> torch.Tensor:
    """Text features = one-hot of the product id (so each product's text is its own)."""
    return torch.eye(num_products, dim)


def test_build_hetero_graph_has_typed_edges_and_reverses():
    data = planted_graph()
    assert set(data.edge_types) == {
        ("user", "interacts", "product"),
        ("product", "rev_interacts", "user"),
        ("product", "made_by", "brand"),
        ("brand", "rev_made_by", "product"),
        ("product", "in_category", "category"),
        ("category", "rev_in_category", "product"),
        ("product", "also_bought", "product"),
        ("product", "rev_also_bought", "product"),
    }
    fwd = data[INTERACTS].edge_index
    rev = data["product", "rev_interacts", "user"].edge_index
    assert torch.equal(fwd.flip(0), rev)
    assert data["user"].num_nodes == 3 and data["product"].num_nodes == 5


def test_build_hetero_graph_ablation_flags_change_the_graph():
    no_kg = planted_graph(use_kg=False)
    assert set(no_kg.edge_types) == {("user", "interacts", "product"), ("product", "rev_interacts", "user")}
    no_users = planted_graph(use_user_nodes=False)
    assert INTERACTS not in no_users.edge_types
    assert ("product", "made_by", "brand") in no_users.edge_types


def test_build_hetero_graph_sums_duplicate_edges():
    data = build_hetero_graph(
        NUM_NODES, (torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))
    )
    assert data[INTERACTS].edge_index.tolist() == [[0], [1]]
    assert data[INTERACTS].edge_weight.tolist() == [2.0]  # weights rescaled to mean 1, then summed


def test_build_hetero_graph_rejects_out_of_range_index():
    with pytest.raises(ValueError, match="out of range"):
        build_hetero_graph(NUM_NODES, (torch.tensor([0]), torch.tensor([7]), None))


def test_normalized_adjacency_is_symmetric_and_degree_normalised():
    adj, offsets = normalized_adjacency(planted_graph())
    dense = adj.to_dense()
    assert torch.allclose(dense, dense.t())
    assert offsets == {"user": (0, 3), "product": (3, 5), "brand": (8, 2), "category": (10, 2)}
    # user 0 (degree 2) - product 0 (degree: user 0, brand 0, category 0 = 3)
    assert dense[0, 3].item() == pytest.approx(1 / (2 * 3) ** 0.5)


def test_model_get_embedding_shapes():
    model = KgrecModel(planted_graph(), ModelConfig(dim=4, user_encoder="mean", history_length=3), product_text=id_text())
    users, products = model.get_embedding()
    assert users.shape == (3, 4) and products.shape == (5, 4)
    nodes = model.propagate()
    assert {t: v.shape[0] for t, v in nodes.items()} == NUM_NODES


def test_model_cold_product_gets_embedding_from_text_and_brand():
    has_id = torch.tensor([True, True, True, True, False])
    # Text only (no KG): the cold product's layer-0 vector is its text projection.
    text_only = KgrecModel(
        planted_graph(use_kg=False), ModelConfig(dim=4, use_kg=False), product_text=id_text(), product_has_id=has_id
    )
    assert text_only.propagate()["product"][4].abs().sum() > 0
    # KG only (no text): the brand and category edges reach it.
    kg_only = KgrecModel(planted_graph(), ModelConfig(dim=4, use_text=False), product_has_id=has_id)
    assert kg_only.layer0()[3 + 4].abs().sum() == 0  # no ID part for the cold product
    assert kg_only.propagate()["product"][4].abs().sum() > 0
    # Neither: nothing can place it.
    bare = KgrecModel(
        planted_graph(use_kg=False), ModelConfig(dim=4, use_text=False, use_kg=False), product_has_id=has_id
    )
    assert bare.propagate()["product"][4].abs().sum() == 0


def test_product_without_events_keeps_its_text_start_fixed():
    has_id = torch.tensor([True, True, True, True, False])
    torch.manual_seed(0)
    model = KgrecModel(planted_graph(), ModelConfig(dim=4, id_init="text"), product_text=torch.randn(5, 8), product_has_id=has_id)
    start = model.embedding["product"].weight.detach().clone()
    ids = model.layer0(with_text=False)[3:8]  # the products' rows (after the 3 users)
    assert torch.equal(ids, start) and ids[4].abs().sum() > 0  # its text start, not zero
    # No gradient reaches it, by the whole-graph or the cached row path: being a negative cannot move it.
    model.propagate()["product"].pow(2).sum().backward()
    model.cache_propagation()
    model.product_vectors(torch.tensor([4, 0])).pow(2).sum().backward()
    grad = model.embedding["product"].weight.grad
    assert grad[4].abs().sum() == 0 and grad[:4].abs().sum(-1).gt(0).all()
    # A random start says nothing about a product: without events it has no ID part.
    random = KgrecModel(planted_graph(), ModelConfig(dim=4, id_init="random"), product_text=torch.randn(5, 8), product_has_id=has_id)
    assert random.layer0(with_text=False)[3 + 4].abs().sum() == 0


def test_model_use_text_flag_controls_text_projection():
    assert KgrecModel(planted_graph(), ModelConfig(dim=4), product_text=id_text()).text_proj is not None
    assert KgrecModel(planted_graph(), ModelConfig(dim=4, use_text=False), product_text=id_text()).text_proj is None


def test_text_principal_components_keep_the_texts_geometry_at_the_requested_spread():
    torch.manual_seed(0)
    text = torch.randn(40, 6) @ torch.randn(6, 6) + 3.0  # an offset the PCA must remove
    out = text_principal_components(text, dim=6, std=0.1, chunk=7)  # chunks must not change the result
    assert out.shape == (40, 6)
    assert out.std().item() == pytest.approx(0.1, rel=1e-4)
    assert torch.allclose(out.mean(0), torch.zeros(6), atol=1e-5)
    # Every component kept: the pairwise distances are the texts', times one scale.
    ratio = torch.pdist(out) / torch.pdist(text)
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-3)
    assert torch.allclose(text_principal_components(text, dim=6, std=0.1), out, atol=1e-5)
    # Fewer components: the first one is the direction of largest variance.
    top = text_principal_components(text, dim=2, std=0.1)
    assert top[:, 0].var() > top[:, 1].var()
    # More than the text has: the extra columns are random, the first ones the same.
    wide = text_principal_components(text, dim=9, std=0.1)
    assert wide.shape == (40, 9)
    assert torch.allclose(wide[:, :6] / wide[:, :6].std(), out / out.std(), atol=1e-4)


def test_model_id_init_text_places_products_with_similar_texts_together():
    # Products 0-2 share one text theme, 3-4 another.
    text = torch.tensor([[1.0, 0.1, 0, 0], [1.0, 0, 0.1, 0], [0.9, 0, 0, 0.1], [0, 0, 1.0, 1.0], [0, 0.1, 1.0, 0.9]])
    torch.manual_seed(0)
    model = KgrecModel(planted_graph(), ModelConfig(dim=4, id_init="text", text_init_std=0.1), product_text=text)
    ids = F.normalize(model.embedding["product"].weight, dim=-1)
    similarity = ids @ ids.t()
    same, across = similarity[0, 1:3].min(), similarity[:3, 3:].max()
    assert same > 0.5 and across < 0
    assert model.embedding["product"].weight.std().item() == pytest.approx(0.1, rel=1e-3)
    # Without text, 'text' falls back to 'random'.
    torch.manual_seed(0)
    random = KgrecModel(planted_graph(), ModelConfig(dim=4, id_init="random"), product_text=text).embedding["product"].weight
    torch.manual_seed(0)
    no_text = KgrecModel(planted_graph(), ModelConfig(dim=4, id_init="text", use_text=False), product_text=text)
    assert torch.equal(no_text.embedding["product"].weight, random)


def test_histories_keep_each_product_once_latest_right_aligned_with_decay():
    user = torch.tensor([0, 0, 0, 1, 0])
    product = torch.tensor([2, 0, 1, 3, 0])
    timestamp = torch.tensor([5, 1, 3, 0, 0])  # user 0 in time order: 0 (twice), 1, 2
    weight = torch.tensor([1.0, 2.0, 1.0, 1.0, 5.0])
    histories = Histories.from_events(user, product, timestamp, weight, num_rows=3)
    assert histories.indptr.tolist() == [0, 3, 4, 4]
    assert histories.product_index.tolist() == [0, 1, 2, 3]  # product 0 once, at its latest event
    assert histories.weight.tolist() == [5.0, 1.0, 1.0, 1.0]  # with its heaviest weight
    assert histories.timestamp.tolist() == [1, 3, 5, 0]  # and its latest time
    assert (histories.product_index.dtype, histories.weight.dtype, histories.timestamp.dtype) == (
        torch.long, torch.float32, torch.long)
    assert histories.latest_timestamps(2).tolist() == [[3, 5], [0, 0], [0, 0]]
    index, latest_weight = histories.latest(length=2, decay=0.5)
    assert index.tolist() == [[1, 2], [0, 3], [0, 0]]
    assert latest_weight.tolist() == [[0.5, 1.0], [0.0, 1.0], [0.0, 0.0]]
    picked = histories.select(torch.tensor([1, 0]))
    assert picked.indptr.tolist() == [0, 1, 4] and picked.product_index.tolist() == [3, 0, 1, 2]


def test_histories_without_events_are_empty_rows():
    empty = torch.zeros(0, dtype=torch.long)
    histories = Histories.from_events(empty, empty, empty, torch.zeros(0), num_rows=2)
    assert histories.indptr.tolist() == [0, 0, 0] and len(histories) == 2
    index, weight = histories.latest(3, 0.5)
    assert index.tolist() == [[0, 0, 0]] * 2 and weight.tolist() == [[0.0, 0.0, 0.0]] * 2


def test_model_users_follow_the_one_history_rule():
    cfg = ModelConfig(dim=4, user_encoder="mean", history_length=2, recency_decay=0.5)
    model = KgrecModel(planted_graph(), cfg, product_text=id_text())
    histories = Histories.from_events(INTERACTIONS[0], INTERACTIONS[1], torch.arange(6), torch.ones(6), 3)
    model.set_histories(histories)
    users, products = model.get_embedding()
    fresh = history_embedding(products, *Histories.from_events(
        torch.zeros(2, dtype=torch.long), torch.tensor([1, 2]), torch.arange(2), torch.ones(2), 1).latest(2, 0.5))
    assert torch.allclose(F.normalize(fresh[0], dim=0), users[1], atol=1e-6)
    # Only the last history_length products count.
    longer = history_embedding(products, *Histories.from_events(
        torch.zeros(3, dtype=torch.long), torch.tensor([4, 1, 2]), torch.arange(3), torch.ones(3), 1).latest(2, 0.5))
    assert torch.allclose(longer, fresh)
    empty = Histories.from_events(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0), 1)
    assert history_embedding(products, *empty.latest(2, 0.5)).abs().sum() == 0


def test_history_embedding_weighted_mean():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = history_embedding(emb, torch.tensor([[0, 1]]), torch.tensor([[1.0, 3.0]]))
    assert torch.allclose(out, torch.tensor([[0.25, 0.75]]))


def test_softmax_loss_prefers_the_target():
    products = torch.eye(4)
    users = products[[0, 1]]
    good = softmax_loss(users, products, torch.tensor([0, 1]), temperature=0.1)
    bad = softmax_loss(users, products, torch.tensor([2, 3]), temperature=0.1)
    assert good < bad
    sampled = softmax_loss(users, products, torch.tensor([0, 1]), 0.1, negatives=torch.tensor([2, 3]))
    assert torch.isfinite(sampled) and sampled < bad
    assert bpr_loss(users, products, torch.tensor([0, 1]), torch.tensor([2, 3]), 0.1) < bpr_loss(
        users, products, torch.tensor([2, 3]), torch.tensor([0, 1]), 0.1
    )


def test_model_user_modes():
    for mode in ("history", "id", "hybrid"):
        model = KgrecModel(planted_graph(), ModelConfig(dim=4, user_encoder="mean", user_mode=mode))
        users, _ = model.get_embedding()
        assert users.shape == (3, 4)


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_cached_propagation_equals_full_propagation_when_fresh(layers):
    torch.manual_seed(0)
    names = torch.randn(2, 8)
    model = KgrecModel(
        planted_graph(), ModelConfig(dim=4, layers=layers), product_text=torch.randn(5, 8),
        brand_text=names, category_text=torch.randn(2, 8),
        product_has_id=torch.tensor([True, True, True, True, False]),
    )
    full = model.propagate()["product"]
    rows = torch.tensor([4, 1, 1])
    # block narrower than the text: exercises the column split; live_neighbours=1 moves
    # every product's weaker one-hop edges into the refreshed context.
    for settings in ({"block": 3}, {"live_neighbours": 1}):
        model.cache_propagation(**settings)
        assert torch.allclose(model.product_vectors(), full, atol=1e-6)
        assert torch.allclose(model.product_vectors(rows), full[rows], atol=1e-6)


def test_cached_propagation_keeps_each_products_strongest_edges_live():
    torch.manual_seed(0)
    model = KgrecModel(planted_graph(), ModelConfig(dim=4, layers=1, use_text=False))
    model.cache_propagation()
    every = model._one_hop_matrix[0].to_dense()
    model.cache_propagation(live_neighbours=1)
    live = model._one_hop_matrix[0]
    assert int((live.crow_indices()[1:] - live.crow_indices()[:-1]).max()) == 1
    kept = live.to_dense()
    for product in range(every.shape[0]):  # each product keeps its strongest edge
        if every[product].any():
            assert kept[product].max() == every[product].max() and (kept[product] > 0).sum() == 1
    model.product_vectors(torch.tensor([0])).sum().backward()
    touched = [t for t in ("brand", "category") if model.embedding[t].weight.grad is not None
               and model.embedding[t].weight.grad.abs().sum() > 0]
    assert len(touched) == 1  # one live neighbour gets a gradient; the other is in the context


def test_cached_propagation_gives_one_hop_gradients_and_lags_only_deeper_terms():
    torch.manual_seed(0)
    model = KgrecModel(planted_graph(), ModelConfig(dim=4, layers=2, use_text=False))
    model.cache_propagation()
    # Product 0's brand and category are one hop away: they get gradients. Product 1 is
    # two hops away (same user, same category): its term is cached, without a gradient.
    model.product_vectors(torch.tensor([0])).sum().backward()
    assert model.embedding["brand"].weight.grad[0].abs().sum() > 0
    assert model.embedding["category"].weight.grad[0].abs().sum() > 0
    assert model.embedding["product"].weight.grad[0].abs().sum() > 0
    assert model.embedding["product"].weight.grad[1].abs().sum() == 0
    # After an update the deeper terms lag until refreshed; then the two agree again.
    with torch.no_grad():
        model.embedding["product"].weight.add_(1.0)
    assert not torch.allclose(model.product_vectors(), model.propagate()["product"], atol=1e-4)
    model.refresh_context()
    assert torch.allclose(model.product_vectors(), model.propagate()["product"], atol=1e-6)


def test_cached_propagation_needs_history_users():
    model = KgrecModel(planted_graph(), ModelConfig(dim=4, user_mode="id"))
    with pytest.raises(ValueError, match="history"):
        model.cache_propagation()
