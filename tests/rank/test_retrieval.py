"""Candidate retrieval (kgrec.rank.retrieval) and ranking retrieved candidates instead of the catalog."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from kgrec.errors import ConfigError
from kgrec.models.history import Histories
from kgrec.rank.exploration import ExplorationGraph
from kgrec.rank.params import RankParams, Weights
from kgrec.rank.ranking import Catalog, rank
from kgrec.rank.engine import top_n
from kgrec.rank.retrieval import PrincipalScan, ProductIndex, Retriever, blocked_topk


def clustered(num_clusters: int, per_cluster: int, dim: int, spread: float, seed: int) -> tuple[Tensor, Tensor]:
    """Unit vectors planted around ``num_clusters`` random centres: ``(vectors, cluster of each)``."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_clusters, dim, generator=generator), dim=-1)
    cluster = torch.arange(num_clusters).repeat_interleave(per_cluster)
    noise = F.normalize(torch.randn(cluster.numel(), dim, generator=generator), dim=-1)
    return F.normalize(centres[cluster] + spread * noise, dim=-1), cluster



def histories_of(seen_lists: list[list[int]]) -> Histories:
    rows = torch.tensor([row for row, seen in enumerate(seen_lists) for _ in seen], dtype=torch.long)
    products = torch.tensor([p for seen in seen_lists for p in seen], dtype=torch.long)
    n = products.numel()
    return Histories.from_events(rows, products, torch.zeros(n), torch.ones(n), len(seen_lists))


def planted_catalog(num_products: int = 300, num_users: int = 12, seed: int = 5):
    """Clustered products, users near some of them, each user's seen products among their best."""
    products, cluster = clustered(15, num_products // 15, 16, 0.6, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    users = F.normalize(products[torch.randint(num_products, (num_users,), generator=generator)] + 0.3 * torch.randn(num_users, 16, generator=generator), dim=-1)
    best = (users @ products.T).topk(8).indices
    seen = [best[row, : row % 6].tolist() + [int(torch.randint(num_products, (1,), generator=generator))] for row in range(num_users)]
    popularity = torch.rand(num_products, generator=generator) ** 4 * 50
    graph = ExplorationGraph.build(cluster % 7, [[int(c)] for c in cluster], torch.full((15,), -1))
    return products, users, histories_of(seen), Catalog(popularity, graph, products)


def test_blocked_topk_equals_the_dense_topk_across_blocks():
    generator = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(9, 12, generator=generator), torch.randn(1000, 12, generator=generator)
    values, index, low_values, low_index = blocked_topk(queries, keys, 25, lowest=4, block_size=64)
    dense = queries @ keys.T
    assert torch.equal(index, dense.topk(25).indices)
    assert torch.allclose(values, dense.topk(25).values, atol=1e-5)
    assert torch.equal(low_index, dense.topk(4, largest=False).indices)
    assert torch.allclose(low_values, dense.topk(4, largest=False).values, atol=1e-5)
    # k above P: every key, best first.
    values, index, _, _ = blocked_topk(queries[:2], keys[:30], 50, block_size=7)
    assert index.shape == (2, 30) and torch.equal(index, (queries[:2] @ keys[:30].T).topk(30).indices)


def test_top_n_equals_topk_with_excluded_values_and_a_row_short_of_finite_ones():
    generator = torch.Generator().manual_seed(4)
    values = torch.randn(3, 1001, generator=generator)
    values[0, :990] = -torch.inf  # fewer finite values than k in one row
    values[1, 500:520] = 9.0 + torch.arange(20.0)  # the top 20 in two neighbouring blocks
    for k in (20, 50):
        top, index = top_n(values, k)
        expected = values.topk(k, dim=1)
        assert torch.equal(top, expected.values)
        finite = torch.isfinite(top)
        assert torch.equal(index[finite], expected.indices[finite]) and bool((index < 1001).all())
    assert torch.equal(top_n(values, 900)[0], values.topk(900, dim=1).values)  # k near the width


def test_exact_index_finds_what_blocked_topk_finds():
    products, users, _, _ = planted_catalog()
    values, index, low_values, low_index = ProductIndex(products, "exact").search(users, 40, lowest=3)
    dense = users @ products.T
    assert torch.equal(index, dense.topk(40).indices) and torch.equal(low_index, dense.topk(3, largest=False).indices)


def test_ivf_index_recalls_nearly_all_of_the_exact_top_on_clustered_products():
    import faiss  # noqa: F401  (a core dependency: a missing one fails the test)
    products, _ = clustered(40, 250, 32, 0.5, seed=1)  # 10,000 products
    queries, _ = clustered(40, 5, 32, 0.5, seed=2)
    queries = F.normalize(queries, dim=-1)
    index = ProductIndex(products, "ivf", probes=16)
    values, found, low_values, _ = index.search(queries, 50, lowest=1)
    exact = (queries @ products.T).topk(50).indices
    recall = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact)) / exact.numel()
    assert recall >= 0.9
    # The scores are the inner products of what was found, best first; the lowest lies below them all.
    assert torch.allclose(values, (queries.unsqueeze(1) * products[found]).sum(-1), atol=1e-5)
    assert bool((values[:, :-1] >= values[:, 1:]).all()) and bool((low_values[:, 0] < values[:, -1]).all())


def test_an_unknown_retrieval_method_is_a_config_error():
    with pytest.raises(ConfigError, match="exact, ivf"):
        ProductIndex(torch.randn(5, 4), "hnsw")  # type: ignore[arg-type]


WEIGHTS = [(0.7, 0.1, 0.2), (0.6, 0.4, 0.0), (0.2, 0.3, 0.5), (1.0, 0.0, 0.0)]


@pytest.mark.parametrize("weights", WEIGHTS)
def test_ranking_candidates_equals_the_full_pass_when_every_product_is_a_candidate(weights):
    products, users, histories, catalog = planted_catalog()
    params = RankParams(Weights.of(weights), k=10, num_candidates=30)
    full = rank(users @ products.T, catalog, params, histories)
    retriever = Retriever(products, catalog.sorted_popularity, num_candidates=products.shape[0])
    retrieved = rank(retriever.candidates(users, histories, params.weights), catalog, params, histories)
    assert torch.equal(retrieved.product_index, full.product_index)
    for name in ("score", "relevance", "popularity", "diversity"):
        assert torch.allclose(getattr(retrieved, name), getattr(full, name), atol=1e-5), name


@pytest.mark.parametrize("weights", WEIGHTS)
def test_ranking_few_exact_candidates_gives_the_full_pass_lists_and_scores(weights):
    """C = the MMR pool = 30 of 300 products: the exact index retrieves the best by the ranking's
    own relevance + popularity on the catalog's scale, past the seen products that fill the head."""
    products, users, histories, catalog = planted_catalog()
    params = RankParams(Weights.of(weights), k=10, num_candidates=30)
    full = rank(users @ products.T, catalog, params, histories)
    candidates = Retriever(products, catalog.sorted_popularity, num_candidates=30).candidates(users, histories, params.weights)
    assert candidates.product_index.shape[1] < products.shape[0]
    retrieved = rank(candidates, catalog, params, histories)
    assert torch.equal(retrieved.product_index, full.product_index)
    assert torch.allclose(retrieved.score, full.score, atol=1e-5)


def test_ivf_candidates_recall_the_full_pass_top_k():
    import faiss  # noqa: F401  (a core dependency: a missing one fails the test)
    products, users, histories, catalog = planted_catalog(num_products=3000, num_users=40)
    params = RankParams(Weights.of((0.7, 0.1, 0.2)), k=10, num_candidates=50)
    full = rank(users @ products.T, catalog, params, histories)
    retriever = Retriever(products, catalog.sorted_popularity, 100, method="ivf", probes=16)
    retrieved = rank(retriever.candidates(users, histories, params.weights), catalog, params, histories)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(retrieved.product_index, full.product_index))
    assert hits / full.product_index.numel() >= 0.9


def test_ranked_candidates_never_include_seen_products_or_repeats():
    products, users, histories, catalog = planted_catalog()
    weights = Weights.of((0.5, 0.2, 0.3))
    candidates = Retriever(products, catalog.sorted_popularity, num_candidates=5).candidates(users, histories, weights)
    for row in range(len(candidates)):
        present = candidates.product_index[row][candidates.product_index[row] >= 0].tolist()
        assert len(present) == len(set(present))
    ranked = rank(candidates, catalog, RankParams(weights, k=10, num_candidates=5), histories)
    for row in range(len(ranked)):
        seen = set(histories.product_index[histories.indptr[row] : histories.indptr[row + 1]].tolist())
        picked = ranked.user(row).product_index.tolist()
        assert picked and not seen & set(picked)


def test_the_most_popular_products_are_candidates_for_a_user_far_from_them():
    products, _, _, catalog = planted_catalog()
    star = int(catalog.popularity.argmax())
    far_user = -products[star : star + 1]  # the star is this user's least relevant product
    weights = Weights.of((0.1, 0.9, 0.0))
    candidates = Retriever(products, catalog.sorted_popularity, num_candidates=5).candidates(far_user, None, weights)
    assert star in candidates.product_index[0].tolist()
    params = RankParams(weights, k=5, num_candidates=5)
    assert torch.equal(rank(candidates, catalog, params).product_index, rank(far_user @ products.T, catalog, params).product_index)


def test_ranking_candidates_rejects_a_query():
    products, users, histories, catalog = planted_catalog()
    weights = Weights.of((1, 0, 0))
    candidates = Retriever(products, catalog.sorted_popularity, 20).candidates(users, histories, weights)
    with pytest.raises(ValueError, match="no query"):
        rank(candidates, catalog, RankParams(weights), histories, query=torch.rand(products.shape[0]))


def low_rank_catalog(
    rank_: int, dim: int = 24, num_products: int = 400, num_users: int = 10, seed: int = 3, decay: float = 1.0
):
    """Products and users in a ``rank_``-dimensional subspace of ``dim`` (direction ``i`` scaled by
    ``decay**i``, as a trained table's energy falls off), each user's seen products among their best."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, rank_, generator=generator))[0] * decay ** torch.arange(rank_)  # [dim, rank_]
    products = F.normalize(torch.randn(num_products, rank_, generator=generator) @ basis.T, dim=-1)
    users = F.normalize(torch.randn(num_users, rank_, generator=generator) @ basis.T, dim=-1)
    best = (users @ products.T).topk(6).indices
    histories = histories_of([best[row, : row % 4].tolist() for row in range(num_users)])
    popularity = torch.rand(num_products, generator=generator) ** 4 * 50
    return products, users, histories, Catalog(popularity, None, products)


def test_principal_scan_is_exact_when_the_products_span_no_more_directions_than_it_keeps():
    products, users, _, _ = low_rank_catalog(rank_=6)
    exact = users @ products.T
    assert torch.allclose(PrincipalScan(products, 6).scores(users), exact, atol=1e-5)
    # Fewer directions than the products span: an approximation, and a worse one with fewer.
    errors = [float((PrincipalScan(products, c).scores(users) - exact).abs().mean()) for c in (4, 2)]
    assert 1e-3 < errors[0] < errors[1]


@pytest.mark.parametrize("weights", WEIGHTS)
def test_pca_candidates_give_the_full_pass_lists_and_scores_when_the_scan_is_exact(weights):
    """6 directions hold a rank-6 table exactly: 30 candidates of 400 rank like the full pass,
    and each user's scale is the exact lowest and highest score over their unseen products."""
    products, users, histories, catalog = low_rank_catalog(rank_=6)
    params = RankParams(Weights.of(weights), k=10, num_candidates=30)
    full = rank(users @ products.T, catalog, params, histories)
    candidates = Retriever(products, catalog.sorted_popularity, 30, method="pca", components=6).candidates(
        users, histories, params.weights
    )
    assert candidates.product_index.shape[1] < products.shape[0]
    unseen = users @ products.T
    unseen[histories.row_of_entry, histories.product_index] = torch.nan
    assert torch.allclose(candidates.lowest, unseen.nan_to_num(torch.inf).amin(dim=1), atol=1e-5)
    assert torch.allclose(candidates.highest, unseen.nan_to_num(-torch.inf).amax(dim=1), atol=1e-5)
    retrieved = rank(candidates, catalog, params, histories)
    assert torch.equal(retrieved.product_index, full.product_index)
    assert torch.allclose(retrieved.score, full.score, atol=1e-5)


def test_pca_candidates_recall_the_full_pass_top_k_with_fewer_directions_than_the_products_span():
    products, users, histories, catalog = low_rank_catalog(rank_=16, num_products=2000, num_users=30, decay=0.9)
    params = RankParams(Weights.of((0.7, 0.1, 0.2)), k=10, num_candidates=50)
    full = rank(users @ products.T, catalog, params, histories)
    retriever = Retriever(products, catalog.sorted_popularity, 100, method="pca", components=12)
    candidates = retriever.candidates(users, histories, params.weights)
    # The scale's ends are exact scores of the products nearest the approximate ends, and ranking
    # widens it to the candidates' own: the exact highest and, for nearly every user, the exact lowest.
    unseen = users @ products.T
    unseen[histories.row_of_entry, histories.product_index] = torch.nan
    lowest, highest = unseen.nan_to_num(torch.inf).amin(dim=1), unseen.nan_to_num(-torch.inf).amax(dim=1)
    best_candidate = unseen.nan_to_num(-torch.inf).gather(1, candidates.product_index.clamp(min=0)).amax(dim=1)
    assert torch.allclose(torch.maximum(candidates.highest, best_candidate), highest, atol=1e-5)
    assert bool((candidates.lowest >= lowest - 1e-5).all())
    assert float(((candidates.lowest - lowest).abs() < 1e-5).float().mean()) >= 0.9
    retrieved = rank(candidates, catalog, params, histories)
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(retrieved.product_index, full.product_index))
    assert hits / full.product_index.numel() >= 0.9


def test_pca_scan_in_several_passes_equals_one_pass_and_skips_a_user_who_saw_everything(monkeypatch):
    import kgrec.rank.retrieval as retrieval

    products, users, histories, catalog = low_rank_catalog(rank_=8, num_products=100, num_users=5)
    rows = [histories.product_index[histories.indptr[r] : histories.indptr[r + 1]].tolist() for r in range(5)]
    histories = histories_of(rows + [list(range(100))])  # a sixth user has seen every product
    users = torch.cat([users, users[:1]])
    retriever = Retriever(products, catalog.sorted_popularity, 20, method="pca", components=5)
    weights = Weights.of((0.6, 0.4, 0.0))
    one_pass = retriever.candidates(users, histories, weights)
    monkeypatch.setattr(retrieval, "SCAN_SCORES", 250)  # two users a pass
    passes = retriever.candidates(users, histories, weights)
    assert torch.equal(passes.product_index, one_pass.product_index)
    assert torch.equal(passes.lowest, one_pass.lowest) and torch.equal(passes.highest, one_pass.highest)
    assert passes.lowest[5] == torch.inf and passes.highest[5] == -torch.inf
    ranked = rank(passes, catalog, RankParams(weights, k=10, num_candidates=20), histories)
    assert ranked.user(5).product_index.numel() == 0 and ranked.user(0).product_index.numel() == 10


def test_pca_with_no_directions_is_a_config_error():
    with pytest.raises(ConfigError, match="pca_components"):
        Retriever(torch.randn(5, 4), Catalog(torch.rand(5)).sorted_popularity, 3, method="pca", components=0)
