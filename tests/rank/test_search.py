"""Search's pure parts: words, Lucene query text, entity linking, the hybrid mix."""

from __future__ import annotations

import pytest
import torch

from kgrec.errors import ConfigError
from kgrec.rank.search import (
    EntityHit,
    active_mix,
    describe_entities,
    edit_distance,
    entity_match,
    escape_lucene,
    hybrid_relevance,
    link_entities,
    lucene_query,
    normalise_parts,
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


def test_entity_match_is_the_share_of_named_kinds_a_product_matches():
    brand = torch.tensor([0, 1])
    category = torch.tensor([1, 2])
    assert entity_match([brand, category], 4).tolist() == [0.5, 1.0, 0.5, 0.0]
    assert entity_match([], 3).tolist() == [0.0, 0.0, 0.0]


def test_normalise_parts_keeps_no_hit_at_zero_and_minmaxes_similarities():
    candidates = torch.tensor([True, True, True, False])
    parts = normalise_parts(
        {"lexical": torch.tensor([4.0, 2.0, 0.0, 9.0]), "dense": torch.tensor([0.2, 0.6, 0.4, 0.9])}, candidates
    )
    assert parts["lexical"].tolist() == [1.0, 0.5, 0.0, 0.0]  # the non-candidate's 9 neither counts nor shows
    assert parts["dense"].tolist() == pytest.approx([0.0, 1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="unknown part"):
        normalise_parts({"nope": torch.zeros(4)}, candidates)


def test_active_mix_rescales_the_parts_in_use_and_rejects_all_zero():
    mix = {"lexical": 0.3, "dense": 0.3, "entity": 0.2, "personal": 0.2}
    assert active_mix(mix, ["lexical", "dense"]) == {"lexical": 0.5, "dense": 0.5}
    assert sum(active_mix(mix, ["lexical", "dense", "entity", "personal"]).values()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="all 0"):
        active_mix({"lexical": 0.0, "dense": 0.0}, ["lexical", "dense"])


def test_hybrid_relevance_mixes_candidates_and_excludes_the_rest():
    candidates = torch.tensor([True, True, False])
    parts = {"lexical": torch.tensor([1.0, 0.0, 0.0]), "dense": torch.tensor([0.0, 1.0, 0.0])}
    out = hybrid_relevance(parts, {"lexical": 0.75, "dense": 0.25}, candidates)
    assert out[:2].tolist() == [0.75, 0.25] and out[2] == -torch.inf


def test_link_entities_takes_an_exact_spelling_over_a_near_one():
    hits = [EntityHit("brand", "Nevria", "Nevria"), EntityHit("brand", "Nevtis", "Nevtis")]
    assert [e.key for e in link_entities(["nevria"], hits)] == ["Nevria"]
    assert [e.key for e in link_entities(["nevira"], hits)] == ["Nevria"]  # a typo of one, not both
