"""Search's pure parts: words, Lucene query text, entity linking, the hybrid mix."""

from __future__ import annotations

import pytest
import torch

from kgrec.errors import ConfigError
from kgrec.models.history import Histories
from kgrec.rank.exploration import ExplorationGraph
from kgrec.rank.params import RankParams, Weights
from kgrec.rank.ranking import Catalog, rank
from kgrec.rank.search import (
    EntityHit,
    active_mix,
    candidate_scores,
    describe_entities,
    edit_distance,
    entity_match,
    escape_lucene,
    hybrid_relevance,
    link_entities,
    lucene_query,
    name_words,
    normalise_parts,
    rank_candidates,
    tokenise,
)


def test_tokenise_lowercases_and_keeps_apostrophe_words():
    assert tokenise("L'Oréal Paris: Eye-Liner (black)!") == ["l'oréal", "paris", "eye", "liner", "black"]


def test_escape_lucene_escapes_every_special_character():
    assert escape_lucene('a+b-c!d(e)f{g}h[i]j^k"l~m*n?o:p\\q/r') == (
        'a\\+b\\-c\\!d\\(e\\)f\\{g\\}h\\[i\\]j\\^k\\"l\\~m\\*n\\?o\\:p\\\\q\\/r'
    )
    assert escape_lucene("x && y || z") == "x \\&\\& y \\|\\| z"


def test_lucene_query_drops_stop_words_and_repeats_and_sizes_fuzziness_by_length():
    assert lucene_query(["the", "red", "lipstick", "for", "red", "ox"]) == "red~1 lipstick~2 ox"
    assert lucene_query(["red", "lipstick"], fuzzy=False) == "red lipstick"
    assert lucene_query(["and", "the"]) == ""


def test_lucene_query_matches_words_spelt_like_a_name_as_spelt():
    hits = [EntityHit("brand", "Lumen", "Lumen"), EntityHit("category", "Beauty > Makeup > Eyes", "Eyes")]
    assert name_words(hits) == {"lumen", "eyes"}
    assert lucene_query(["lumen", "mascarra", "eyes"], exact=name_words(hits)) == "lumen mascarra~2 eyes"


def test_edit_distance_counts_transpositions_as_one_edit():
    assert edit_distance("mascara", "mascara") == 0
    assert edit_distance("mascara", "macsara") == 1
    assert edit_distance("lumen", "lumne") == 1
    assert edit_distance("lumen", "xyzzy") == 3  # capped at limit + 1


def test_link_entities_keeps_only_names_the_query_really_contains():
    hits = [
        EntityHit("brand", "Lumen", "Lumen"),
        EntityHit("brand", "Blue Lagoon", "Blue Lagoon"),  # shares "blue" only
        EntityHit("category", "Beauty > Makeup", "Makeup"),
        EntityHit("category", "Beauty > Makeup > Eyes", "Eyes"),
        EntityHit("category", "Beauty > Skin Care > Eyes", "Eyes"),
        EntityHit("category", "Garden", "Garden"),
    ]
    linked = link_entities(tokenise("blue lumne makeup eyes"), hits)  # "lumne": a typo
    assert [(e.kind, e.key) for e in linked] == [("brand", "Lumen"), ("category", "Beauty > Makeup > Eyes")]
    assert linked[0].words == ("lumne",)
    assert describe_entities(linked) == "brand: Lumen; category: Beauty > Makeup > Eyes"


def test_link_entities_keeps_every_same_named_category_when_the_path_does_not_decide():
    hits = [EntityHit("category", "Beauty > Makeup > Eyes", "Eyes"), EntityHit("category", "Beauty > Skin Care > Eyes", "Eyes")]
    assert [e.key for e in link_entities(["eyes"], hits)] == ["Beauty > Makeup > Eyes", "Beauty > Skin Care > Eyes"]


def test_link_entities_without_fuzzy_needs_exact_words():
    hits = [EntityHit("brand", "Lumen", "Lumen")]
    assert link_entities(["lumne"], hits, fuzzy=False) == []
    assert [e.key for e in link_entities(["lumen"], hits, fuzzy=False)] == ["Lumen"]


def test_entity_match_is_the_share_of_named_kinds_a_candidate_matches():
    brand = torch.tensor([0, 1, 9])
    category = torch.tensor([1, 2])
    assert entity_match([brand, category], torch.arange(4)).tolist() == [0.5, 1.0, 0.5, 0.0]
    assert entity_match([brand, category], torch.tensor([1, 3, 9])).tolist() == [1.0, 0.0, 0.5]
    assert entity_match([], torch.arange(3)).tolist() == [0.0, 0.0, 0.0]


def test_candidate_scores_places_scores_and_drops_non_candidates():
    candidates = torch.tensor([2, 5, 7, 11])
    scores = candidate_scores(candidates, torch.tensor([7, 3, 2, 20]), torch.tensor([4.0, 9.0, 1.0, 8.0]))
    assert scores.tolist() == [1.0, 0.0, 4.0, 0.0]  # 3 and 20 are not candidates
    assert candidate_scores(torch.zeros(0, dtype=torch.long), torch.tensor([1]), torch.tensor([1.0])).numel() == 0


def test_normalise_parts_keeps_no_hit_at_zero_and_minmaxes_similarities():
    parts = normalise_parts({"lexical": torch.tensor([4.0, 2.0, 0.0]), "dense": torch.tensor([0.2, 0.6, 0.4])})
    assert parts["lexical"].tolist() == [1.0, 0.5, 0.0]
    assert parts["dense"].tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert normalise_parts({"entity": torch.zeros(2)})["entity"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown part"):
        normalise_parts({"nope": torch.zeros(4)})


def test_active_mix_rescales_the_parts_in_use_and_rejects_all_zero():
    mix = {"lexical": 0.3, "dense": 0.3, "entity": 0.2, "personal": 0.2}
    assert active_mix(mix, ["lexical", "dense"]) == {"lexical": 0.5, "dense": 0.5}
    assert sum(active_mix(mix, ["lexical", "dense", "entity", "personal"]).values()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="all 0"):
        active_mix({"lexical": 0.0, "dense": 0.0}, ["lexical", "dense"])


def test_hybrid_relevance_mixes_the_parts():
    parts = {"lexical": torch.tensor([1.0, 0.0, 0.5]), "dense": torch.tensor([0.0, 1.0, 0.5])}
    assert hybrid_relevance(parts, {"lexical": 0.75, "dense": 0.25}).tolist() == [0.75, 0.25, 0.5]


@pytest.mark.parametrize("diversity", [0.0, 0.3])
@pytest.mark.parametrize("include_seen", [False, True])
def test_rank_candidates_ranks_as_the_whole_catalog_with_the_rest_left_out(diversity: float, include_seen: bool):
    """Ranking the candidates alone gives the list, scores and parts of ranking the whole
    catalog with relevance -inf outside the candidates (popularity, seen products, the
    exploration bonus and the novelty term included)."""
    torch.manual_seed(5)
    num_products = 400
    embedding = torch.nn.functional.normalize(torch.randn(num_products, 8), dim=-1)
    graph = ExplorationGraph.build(torch.randint(-1, 20, (num_products,)), torch.randint(0, 15, (num_products, 2)), torch.full((15,), -1))
    catalog = Catalog(popularity=torch.rand(num_products) ** 3, exploration=graph, product_embedding=embedding)
    candidates = torch.randperm(num_products)[:90].sort().values
    outside = torch.arange(num_products)[~torch.isin(torch.arange(num_products), candidates)]
    seen = torch.cat([candidates[[4, 40]], outside[:1]])  # two candidates and a product that is none
    n = seen.numel()
    histories = Histories.from_events(torch.zeros(n, dtype=torch.long), seen, torch.arange(n), torch.ones(n), 1)
    relevance = torch.rand(candidates.numel())
    params = RankParams(Weights.of((0.6, 0.1, diversity)), 10, num_candidates=30, include_seen=include_seen)

    alone = rank_candidates(relevance, candidates, catalog, params, histories).user(0)
    full_relevance = torch.full((num_products,), -torch.inf)
    full_relevance[candidates] = relevance
    full = rank(full_relevance, catalog, params, histories).user(0)
    assert alone.product_index.tolist() == full.product_index.tolist()
    assert set(alone.product_index.tolist()) <= set(candidates.tolist())
    assert include_seen or not set(alone.product_index.tolist()) & set(seen.tolist())
    for name in ("score", "relevance", "popularity", "diversity"):
        assert getattr(alone, name).tolist() == pytest.approx(getattr(full, name).tolist(), abs=1e-6)
    assert rank_candidates(torch.zeros(0), torch.zeros(0, dtype=torch.long), catalog, params).user(0).product_index.numel() == 0


def test_link_entities_takes_an_exact_spelling_over_a_near_one():
    hits = [EntityHit("brand", "Nevria", "Nevria"), EntityHit("brand", "Nevtis", "Nevtis")]
    assert [e.key for e in link_entities(["nevria"], hits)] == ["Nevria"]
    assert [e.key for e in link_entities(["nevira"], hits)] == ["Nevria"]  # a typo of one, not both
