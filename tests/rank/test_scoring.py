from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kgrec.errors import ConfigError
from kgrec.rank.config import ExplorationLevels, RankConfig
from kgrec.models.history import Histories
from kgrec.rank.engine import RankedList, SortedValues
from kgrec.rank.exploration import ExplorationGraph, exploration_bonus
from kgrec.rank.params import RankParams, Weights
from kgrec.rank.parts import decayed_popularity, mix_query, normalise, similarity_scores
from kgrec.rank.ranking import Catalog, rank


def parse_weights(text):
    return Weights.parse(text).as_tuple()


def relevance(user, products, query_vector=None, texts=None, query_mix=0.5):
    """The personal part, mixed with a query as the serving path mixes it."""
    personal = similarity_scores(user, products).reshape(1, -1)
    if query_vector is None:
        return normalise(personal)[0]
    if texts is None:
        raise ValueError("a query_vector needs product_text_embeddings [P, d_text]")
    return mix_query(personal, similarity_scores(query_vector, texts), query_mix)[0]


def seen_histories(seen_lists, num_users):
    """Histories whose products are the given seen lists (what ranking excludes)."""
    rows = torch.cat([torch.full((len(s),), i) for i, s in enumerate(seen_lists)]) if seen_lists else torch.zeros(0)
    products = torch.cat([torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in seen_lists]) if seen_lists else torch.zeros(0)
    n = rows.numel()
    return Histories.from_events(rows.long(), products.long(), torch.zeros(n), torch.ones(n), num_users)


def rank_batch(rel, pop, exploration, weights, k, candidate_mask=None, product_embeddings=None,
               num_candidates=200, exploration_share=0.5, normalisation="minmax", histories=None):
    b, num_products = rel.shape
    if candidate_mask is not None:
        mask = candidate_mask.reshape(-1, num_products).expand(b, num_products)
        histories = seen_histories([(~mask[i]).nonzero().reshape(-1) for i in range(b)], b)
    params = RankParams(Weights.of(weights), k, num_candidates, exploration_share, normalisation)
    return rank(rel, Catalog(pop, exploration, product_embeddings), params, histories)


def rank_products(rel, pop, exploration, weights, k, candidate_mask=None, product_embeddings=None, exclude=None, **params):
    histories = None if exclude is None else seen_histories([exclude], 1)
    mask = None if candidate_mask is None else candidate_mask.reshape(1, -1)
    return rank_batch(rel.reshape(1, -1), pop, exploration, weights, k, mask, product_embeddings,
                      histories=histories, **params).user(0)


def rank_all_users(users, products, seen, popularity, k, weights, batch_size=256, exploration=None, **params):
    """Every user in batches, through the one public rank(), as the batch path does."""
    histories = seen_histories(seen, users.shape[0])
    catalog = Catalog(popularity, exploration, products)
    rank_params = RankParams(Weights.of(weights), k, **params)
    parts = []
    for start in range(0, users.shape[0], batch_size):
        rows = torch.arange(start, min(start + batch_size, users.shape[0]))
        batch = histories.select(rows)
        parts.append(rank(similarity_scores(users[rows], products), catalog, rank_params, batch))
    ranked = RankedList(*(torch.cat([getattr(p, f) for p in parts]) for f in RankedList.__dataclass_fields__))
    return ranked.product_index, ranked.score

DAY = 86_400

# A tiny planted catalog. Categories (index: path, parent):
#   0 Beauty (-), 1 Beauty > Makeup (0), 2 … > Eyes (1), 3 … > Lips (1), 4 Beauty > Hair (0), 5 Garden (-)
CATEGORY_PARENT = torch.tensor([-1, 0, 1, 1, 0, -1])
# Products (index: category, brand):
#   0 Eyes/A  1 Eyes/B  2 Eyes/A  3 Lips/C  4 Garden/A  5 Garden/B  6 Garden/D  7 Eyes/(none)  8 Makeup/D
PRODUCT_BRAND = torch.tensor([0, 1, 0, 2, 0, 1, 3, -1, 3])
PRODUCT_CATEGORIES = [[2], [2], [2], [3], [5], [5], [5], [2], [1]]


def test_decayed_popularity_halves_an_event_every_half_life():
    now = 100 * DAY
    product = torch.tensor([0, 1, 2, 2])
    timestamp = torch.tensor([now, now - 30 * DAY, now - 60 * DAY, now + 5 * DAY])
    weight = torch.tensor([1.0, 2.0, 4.0, 1.0])
    popularity = decayed_popularity(product, timestamp, weight, num_products=4, now=now, half_life_days=30)
    # p2: 4 · 0.25 plus a future event that counts fully
    assert torch.allclose(popularity, torch.tensor([1.0, 1.0, 2.0, 0.0]))


def test_decayed_popularity_rejects_out_of_range_products():
    with pytest.raises(ValueError, match="product_index must lie in 0..2"):
        decayed_popularity(torch.tensor([3]), torch.tensor([0]), torch.tensor([1.0]), 3, now=0, half_life_days=1)


def test_relevance_without_query_is_the_normalised_personal_similarity():
    products = torch.eye(3)
    out = relevance(torch.tensor([0.1, 0.0, 1.0]), products)
    assert out.argmax() == 2 and out.max() == 1 and out.min() == 0


def test_relevance_mixes_the_query_by_query_mix():
    products = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])  # the user likes p0
    texts = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])  # the query matches p1's text
    user, query = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])
    assert relevance(user, products, query, texts, query_mix=0.0).argmax() == 0
    assert relevance(user, products, query, texts, query_mix=1.0).argmax() == 1
    personal = normalise(similarity_scores(user, products))
    searched = normalise(similarity_scores(query, texts))
    mixed = relevance(user, products, query, texts, query_mix=0.3)
    assert torch.allclose(mixed, 0.7 * personal + 0.3 * searched)


def test_relevance_with_a_query_needs_product_texts():
    with pytest.raises(ValueError, match="product_text_embeddings"):
        relevance(torch.ones(2), torch.eye(2), query_vector=torch.ones(3))


def test_normalise_minmax_ignores_non_candidates_and_zeros_a_constant_part():
    scores = torch.tensor([100.0, 1.0, 2.0, 3.0])
    mask = torch.tensor([False, True, True, True])
    assert torch.equal(normalise(scores, mask=mask), torch.tensor([0.0, 0.0, 0.5, 1.0]))
    assert torch.equal(normalise(torch.full((4,), 7.0)), torch.zeros(4))


def test_normalise_rank_gives_percentiles_with_shared_ties():
    out = normalise(torch.tensor([10.0, 1.0, 5.0, 5.0, 1000.0]), method="rank")
    assert torch.allclose(out, torch.tensor([0.75, 0.0, 0.375, 0.375, 1.0]))


def test_normalise_rejects_an_unknown_method():
    with pytest.raises(ConfigError, match="'minmax' or 'rank'"):
        normalise(torch.ones(3), method="zscore")  # type: ignore[arg-type]


def test_exploration_bonus_follows_the_documented_levels():
    bonus = exploration_bonus(torch.tensor([0]), PRODUCT_BRAND, PRODUCT_CATEGORIES, CATEGORY_PARENT)
    expected = [
        0.0,  # p0 seen
        1.0,  # Eyes, new brand B
        0.25,  # Eyes, known brand A: familiar
        0.75,  # Lips: sibling of Eyes
        0.5,  # Garden (far), known brand A
        0.25,  # Garden (far), brand B sells in Eyes: neighbour brand
        0.0,  # Garden, brand D: far from everything
        1.0,  # Eyes, no brand
        0.75,  # Makeup: parent of Eyes
    ]
    assert bonus.tolist() == expected


def test_exploration_bonus_follows_brand_neighbours():
    without = exploration_bonus(torch.tensor([0]), PRODUCT_BRAND, PRODUCT_CATEGORIES, CATEGORY_PARENT)
    linked = exploration_bonus(
        torch.tensor([0]), PRODUCT_BRAND, PRODUCT_CATEGORIES, CATEGORY_PARENT, brand_neighbours=torch.tensor([[3], [0]])
    )
    assert without[6] == 0.0 and linked[6] == 0.25  # brand D is linked to A


def test_exploration_bonus_takes_padded_categories_and_custom_levels():
    padded = torch.tensor([[c[0], -1] for c in PRODUCT_CATEGORIES])
    levels = ExplorationLevels(nearby_category=0.6)
    bonus = exploration_bonus(torch.tensor([0]), PRODUCT_BRAND, padded, CATEGORY_PARENT, levels=levels)
    assert bonus[3] == pytest.approx(0.6)


def test_exploration_graph_scores_a_batch_like_single_users():
    graph = ExplorationGraph.build(PRODUCT_BRAND, PRODUCT_CATEGORIES, CATEGORY_PARENT)
    histories = [[0], [0, 6], [], [3, 8]]
    indptr = torch.tensor([0, 1, 3, 3, 5])
    batch = graph.bonus(indptr, torch.tensor([0, 0, 6, 3, 8]))
    for row, seen in enumerate(histories):
        single = exploration_bonus(torch.tensor(seen, dtype=torch.long), PRODUCT_BRAND, PRODUCT_CATEGORIES, CATEGORY_PARENT)
        assert torch.equal(batch[row], single)
    some = torch.tensor([[1, 0], [4, 5], [0, 1], [3, 2]])
    assert torch.equal(graph.bonus(indptr, torch.tensor([0, 0, 6, 3, 8]), some), batch.gather(1, some))
    assert batch[2].eq(0).all()  # no history: nothing is next to it


def planted_ranking_inputs():
    """p0 and p1 are near-duplicates with the best relevance; p2 is a bit less relevant but different."""
    embeddings = torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.7, -0.7], [-1.0, 0.0]])
    rel = torch.tensor([1.0, 0.95, 0.9, 0.2, 0.0])
    pop = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0])
    return rel, pop, embeddings


def test_rank_products_without_diversity_is_plain_top_k():
    torch.manual_seed(0)
    rel, pop, mask = torch.randn(50), torch.rand(50), torch.rand(50) > 0.2
    ranked = rank_products(rel, pop, torch.rand(50), (0.6, 0.4, 0.0), 10, mask, torch.randn(50, 8))
    base = (0.6 * normalise(rel, mask=mask) + 0.4 * normalise(pop, mask=mask)).masked_fill(~mask, -1.0)
    assert ranked.product_index.tolist() == base.topk(10).indices.tolist()
    assert ranked.diversity.eq(0).all()


def test_rank_products_mmr_passes_over_a_near_duplicate():
    rel, pop, embeddings = planted_ranking_inputs()
    plain = rank_products(rel, pop, None, (1.0, 0.0, 0.0), 3, product_embeddings=embeddings)
    diverse = rank_products(rel, pop, None, (0.7, 0.0, 0.3), 3, product_embeddings=embeddings, exploration_share=0.0)
    assert plain.product_index.tolist() == [0, 1, 2]
    assert diverse.product_index.tolist() == [0, 2, 1]
    assert diverse.diversity[0] == 1.0  # the first pick is novel by definition


def test_rank_products_score_is_exactly_the_weighted_parts():
    torch.manual_seed(1)
    weights = (0.5, 0.2, 0.3)
    ranked = rank_products(torch.randn(40), torch.rand(40), torch.rand(40), weights, 8, product_embeddings=torch.randn(40, 4))
    recomputed = weights[0] * ranked.relevance + weights[1] * ranked.popularity + weights[2] * ranked.diversity
    assert torch.equal(ranked.score, recomputed)
    assert (ranked.score[:-1] >= ranked.score[1:]).all()
    for part in (ranked.relevance, ranked.popularity, ranked.diversity):
        assert part.min() >= 0 and part.max() <= 1


def test_rank_products_exploration_lifts_a_product_next_to_the_history():
    rel = torch.tensor([1.0, 1.0, 0.0])
    exploration = torch.tensor([0.0, 1.0, 0.0])
    ranked = rank_products(rel, torch.zeros(3), exploration, (0.8, 0.0, 0.2), 2)
    assert ranked.product_index.tolist() == [1, 0]
    assert ranked.diversity.tolist() == [1.0, 0.0]  # without embeddings, diversity = exploration


def test_rank_products_never_returns_excluded_products_and_may_return_fewer():
    rel, pop, embeddings = planted_ranking_inputs()
    mask = torch.tensor([False, True, False, True, False])
    ranked = rank_products(rel, pop, None, (0.7, 0.1, 0.2), 4, mask, embeddings)
    assert sorted(ranked.product_index.tolist()) == [1, 3]
    assert len(ranked.rows()) == 2 and ranked.rows()[0]["rank"] == 1


def test_rank_products_with_rank_normalisation_keeps_the_score_identity():
    torch.manual_seed(2)
    ranked = rank_products(torch.randn(30), torch.rand(30) ** 8, None, (0.7, 0.3, 0.0), 5, normalisation="rank")
    assert torch.equal(ranked.score, 0.7 * ranked.relevance + 0.3 * ranked.popularity)


@pytest.mark.parametrize("weights", [(0.7, 0.1, -0.2), (0.0, 0.0, 0.0), (1.0, 2.0)])
def test_rank_products_rejects_bad_weights(weights):
    with pytest.raises(ConfigError, match="weight"):
        rank_products(torch.randn(4), torch.rand(4), None, weights, 2)


def random_users(num_users=40, num_products=60, dim=8, seed=3):
    generator = torch.Generator().manual_seed(seed)
    users = torch.randn(num_users, dim, generator=generator)
    products = torch.randn(num_products, dim, generator=generator)
    seen = [torch.randperm(num_products, generator=generator)[: int(n)] for n in torch.randint(0, 6, (num_users,), generator=generator)]
    return users, products, seen, torch.rand(num_products, generator=generator) ** 3


@pytest.mark.parametrize("normalisation", ["minmax", "rank"])
@pytest.mark.parametrize("weights", [(0.8, 0.2, 0.0), (0.6, 0.1, 0.3)])
def test_rank_all_users_equals_rank_products_for_each_user(weights, normalisation):
    users, products, seen, popularity = random_users()
    brand = torch.randint(-1, 5, (products.shape[0],), generator=torch.Generator().manual_seed(4))
    categories = torch.randint(0, 6, (products.shape[0], 1), generator=torch.Generator().manual_seed(5))
    graph = ExplorationGraph.build(brand, categories, CATEGORY_PARENT, num_brands=5)
    top_index, top_score = rank_all_users(
        users, products, seen, popularity, 5, weights, batch_size=16, exploration=graph,
        num_candidates=20, normalisation=normalisation,
    )
    similarity = similarity_scores(users, products)
    for user in range(users.shape[0]):
        mask = torch.ones(products.shape[0], dtype=torch.bool)
        mask[seen[user]] = False
        exploration = graph.bonus(torch.tensor([0, seen[user].numel()]), seen[user])[0]
        single = rank_products(
            similarity[user], popularity, exploration, weights, 5, mask, products,
            num_candidates=20, normalisation=normalisation,
        )
        assert top_index[user].tolist() == single.product_index.tolist()
        assert torch.allclose(top_score[user], single.score, atol=1e-5)


def test_rank_all_users_pads_users_with_too_few_unseen_products():
    users, products = torch.randn(2, 3), torch.randn(5, 3)
    seen = [torch.tensor([0, 1, 2]), torch.tensor([], dtype=torch.long)]
    top_index, top_score = rank_all_users(users, products, seen, torch.zeros(5), 4, (0.7, 0.1, 0.2))
    assert sorted(top_index[0, :2].tolist()) == [3, 4] and top_index[0, 2:].tolist() == [-1, -1]
    assert torch.isinf(top_score[0, 2:]).all() and (top_index[1] >= 0).all()


def test_rank_batch_returns_one_row_per_user():
    torch.manual_seed(6)
    rel, pop = torch.randn(3, 10), torch.rand(10)
    ranked = rank_batch(rel, pop, None, (0.9, 0.1, 0.0), 4)
    assert ranked.product_index.shape == ranked.score.shape == (3, 4)
    for row in range(3):
        assert ranked.product_index[row].tolist() == rank_products(rel[row], pop, None, (0.9, 0.1, 0.0), 4).product_index.tolist()


def test_cosine_similarity_ignores_vector_length():
    products = torch.tensor([[10.0, 0.0], [0.6, 0.8]])
    user = torch.tensor([0.6, 0.8])
    assert similarity_scores(user, products, "cosine").argmax() == 1
    assert similarity_scores(user, products, "dot").argmax() == 0
    assert torch.allclose(similarity_scores(user, products), F.normalize(products, dim=-1) @ user)


def test_parse_weights_reads_rescales_and_defaults_missing_names_to_zero():
    assert parse_weights("relevance=0.7,popularity=0.1,diversity=0.2") == pytest.approx((0.7, 0.1, 0.2))
    assert parse_weights(" Diversity = 2 , relevance=7, popularity=1") == pytest.approx((0.7, 0.1, 0.2))
    assert parse_weights("relevance=1") == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("relevance", "'relevance' .* is not of the form name=value"),
        ("relevance=0.5,novelty=0.5", "unknown name 'novelty'"),
        ("relevance=0.5,relevance=0.2", "names 'relevance' twice"),
        ("relevance=abc", "'abc' of 'relevance' is not a number"),
        ("relevance=0.5,popularity=-0.1", "popularity=-0.1 must be a number >= 0"),
        ("relevance=0,popularity=0", "every weight 0"),
        ("relevance=0.5,,diversity=0.5", "is not of the form"),
    ],
)
def test_parse_weights_explains_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_weights(text)
    assert "relevance, popularity, diversity" in str(error.value)
    assert "relevance=0.7,popularity=0.1,diversity=0.2" in str(error.value)


def test_rank_config_keeps_its_fields_and_rejects_all_zero_weights():
    config = RankConfig()
    assert config.weights == (0.7, 0.1, 0.2) and config.popularity_half_life_days == 30.0
    assert RankConfig.model_validate({"exploration": {"nearby_category": 0.5}}).exploration.nearby_category == 0.5
    for name, field in RankConfig.model_fields.items():
        assert field.description, name
    with pytest.raises(ValueError, match="all 0"):
        RankConfig(relevance=0, popularity=0, diversity=0)
    with pytest.raises(ValueError, match="extra"):
        RankConfig.model_validate({"novelty": 1})


def test_exploration_graph_from_snapshot_uses_the_snapshot_indices():
    import polars as pl

    from kgrec.ingest.tables import INTERACTION_SCHEMA, PRODUCT_SCHEMA, GraphTables
    from kgrec.snapshot.snapshot import snapshot_from_tables

    products = pl.DataFrame(
        {
            "product_id": ["a", "b", "c", "d"],
            "title": [None] * 4,
            "description": [None] * 4,
            "price": [None] * 4,
            "brand": ["Lumen", "Aster", None, "Lumen"],
            "categories": [["Beauty > Eyes"], ["Beauty > Eyes"], ["Beauty > Lips"], ["Garden"]],
        },
        schema=PRODUCT_SCHEMA,
    )
    interactions = pl.DataFrame([("u", "a", "view", 1, None, 1.0)], schema=INTERACTION_SCHEMA, orient="row")
    snapshot = snapshot_from_tables(GraphTables(products, interactions, users=pl.DataFrame({"user_id": ["u"]})))
    graph = ExplorationGraph.from_snapshot(snapshot)
    seen = torch.tensor([snapshot.product_ids.index("a")])
    bonus = graph.bonus(torch.tensor([0, 1]), seen)[0]
    by_id = dict(zip(snapshot.product_ids.ids.to_list(), bonus.tolist()))
    # b: same category, new brand; c: sibling category, no brand; d: far category, known brand
    assert by_id == {"a": 0.0, "b": 1.0, "c": 0.75, "d": 0.5}


def test_pool_only_exploration_and_presorted_popularity_give_the_same_ranking() -> None:
    # The serving path computes the exploration bonus for the re-ranked pool only and
    # sorts popularity once; both must rank exactly as the full-catalog inputs do.
    torch.manual_seed(3)
    num_products = 500
    embeddings = torch.nn.functional.normalize(torch.randn(num_products, 8), dim=-1)
    categories = torch.randint(0, 30, (num_products, 2))
    graph = ExplorationGraph.build(torch.randint(-1, 40, (num_products,)), categories, torch.full((30,), -1))
    seen = torch.tensor([3, 17, 42, 99])
    indptr = torch.tensor([0, seen.numel()])
    relevance_scores = embeddings @ embeddings[seen].mean(0)
    popularity = torch.rand(num_products) ** 3
    mask = torch.ones(num_products, dtype=torch.bool)
    mask[seen] = False
    common = dict(candidate_mask=mask, product_embeddings=embeddings, num_candidates=60)

    full = rank_products(relevance_scores, popularity, graph.bonus(indptr, seen)[0], (0.6, 0.1, 0.3), 10, **common)
    histories = seen_histories([seen], 1)
    params = RankParams(Weights.of((0.6, 0.1, 0.3)), 10, num_candidates=60)
    pooled = rank(relevance_scores, Catalog(popularity, graph, embeddings), params, histories).user(0)
    assert full.product_index.tolist() == pooled.product_index.tolist()
    assert torch.allclose(full.score, pooled.score) and torch.allclose(full.diversity, pooled.diversity)
    assert full.diversity.abs().sum() > 0  # the bonus did take part


def test_sorted_values_extremes_match_a_brute_force_for_one_and_many_users() -> None:
    torch.manual_seed(4)
    values = torch.randint(0, 6, (40,)).float()  # many ties
    values[7], values[11] = -3.0, 9.0  # a single minimum and maximum, excluded below
    excluded = [torch.tensor([7, 11, 2]), torch.tensor([], dtype=torch.long), torch.arange(40), torch.tensor([11, 11])]
    sorted_values = SortedValues(values)
    rows = torch.cat([torch.full((e.numel(),), i) for i, e in enumerate(excluded)])
    low, high = sorted_values.extremes(rows, torch.cat(excluded), len(excluded))
    for i, e in enumerate(excluded):
        keep = torch.ones(40, dtype=torch.bool)
        keep[e] = False
        expected = (values[keep].min(), values[keep].max()) if keep.any() else (torch.tensor(torch.inf), torch.tensor(-torch.inf))
        one_low, one_high = sorted_values.extremes(torch.zeros(e.numel(), dtype=torch.long), e, 1)  # the one-user path
        assert (low[i], high[i]) == expected and (one_low[0], one_high[0]) == expected


def test_rank_products_exclude_list_ranks_like_a_candidate_mask() -> None:
    torch.manual_seed(5)
    num_products = 300
    embeddings = F.normalize(torch.randn(num_products, 8), dim=-1)
    rel, pop, bonus = torch.randn(num_products), torch.rand(num_products) ** 3, torch.rand(num_products)
    seen = torch.tensor([4, 9, 9, 250, int(rel.argmax()), int(pop.argmax()), int(pop.argmin())])
    mask = torch.ones(num_products, dtype=torch.bool)
    mask[seen] = False
    for weights in ((0.7, 0.3, 0.0), (0.6, 0.1, 0.3)):
        by_mask = rank_products(rel, pop, bonus, weights, 12, mask, embeddings)
        by_list = rank_products(rel, pop, bonus, weights, 12, product_embeddings=embeddings, exclude=seen)
        assert by_mask.product_index.tolist() == by_list.product_index.tolist()
        assert torch.equal(by_mask.score, by_list.score) and torch.equal(by_mask.popularity, by_list.popularity)
        assert not set(by_list.product_index.tolist()) & set(seen.tolist())


def test_rank_batch_never_recommends_non_finite_scores_or_popularity() -> None:
    rel = torch.tensor([[0.9, float("nan"), float("inf"), 0.1, 0.5, -float("inf")]])
    pop = torch.tensor([1.0, 2.0, 3.0, float("nan"), 0.0, 1.0])
    for popularity in (pop, pop.clone()):
        ranked = rank_batch(rel, popularity, None, (0.8, 0.2, 0.0), 6)
        assert ranked.product_index[0].tolist() == [0, 4, -1, -1, -1, -1]  # 1, 2, 3, 5 are not candidates
        assert ranked.relevance[0, :2].tolist() == [1.0, 0.0] and ranked.popularity[0, :2].tolist() == [1.0, 0.0]


def test_rank_products_treats_a_nan_exploration_bonus_as_none() -> None:
    rel, pop, embeddings = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.zeros(4), F.normalize(torch.randn(4, 3), dim=-1)
    with_nan = rank_products(rel, pop, torch.tensor([0.2, float("nan"), 0.1, 0.3]), (0.7, 0.0, 0.3), 3, product_embeddings=embeddings)
    with_zero = rank_products(rel, pop, torch.tensor([0.2, 0.0, 0.1, 0.3]), (0.7, 0.0, 0.3), 3, product_embeddings=embeddings)
    assert with_nan.product_index.tolist() == with_zero.product_index.tolist()
    assert (with_nan.product_index >= 0).all() and len(with_nan) == 3


def test_catalog_keeps_the_model_table_and_novelty_ignores_vector_length() -> None:
    # The catalog holds the model's own table (no [P, dim] copy); the MMR novelty is a cosine,
    # so rows scaled by any positive length give the same list as unit rows.
    torch.manual_seed(3)
    num_products = 40
    embedding = torch.randn(num_products, 8)
    rel, pop = torch.rand(1, num_products), torch.rand(num_products)
    assert Catalog(pop, None, embedding).product_embedding is embedding
    lengths = torch.rand(num_products, 1) * 5 + 0.1
    unit = rank_batch(rel, pop, None, (0.5, 0.1, 0.4), 10, product_embeddings=F.normalize(embedding, dim=-1),
                      exploration_share=0.0)
    scaled = rank_batch(rel, pop, None, (0.5, 0.1, 0.4), 10, product_embeddings=embedding * lengths,
                        exploration_share=0.0)
    assert torch.equal(unit.product_index, scaled.product_index)
    assert torch.allclose(unit.diversity, scaled.diversity, atol=1e-6)
    assert float(unit.diversity[0, 1:].abs().sum()) > 0  # the novelty term took part
