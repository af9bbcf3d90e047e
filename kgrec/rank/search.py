"""Search as pure functions: the query's words, Lucene query text, entity linking, the hybrid mix.

No I/O: the full-text hits come from :mod:`kgrec.store.search`, the orchestration is
:func:`kgrec.pipeline.search`.

- :func:`tokenise` splits a query into lower-case words; :func:`lucene_query` turns the
  words into Lucene query text (special characters escaped, ``word~N`` for typos, except
  for words spelt like a brand or category name);
- :func:`link_entities` keeps the brand and category names whose every word the query
  contains (within the same typo distance), the most specific category when the query
  names a path;
- :func:`hybrid_relevance` mixes the parts (lexical, dense, entity, personal), each
  normalised to ``[0, 1]`` over the candidates (:func:`normalise_parts`);
- :func:`rank_candidates` ranks the candidates alone: every part is a ``[n]`` tensor over
  the ``n`` candidates (sorted product indices), never over the whole catalog.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from kgrec.errors import ConfigError
from kgrec.models.history import Histories
from kgrec.rank.engine import RankedList
from kgrec.rank.exploration import ExplorationGraph
from kgrec.rank.params import RankParams
from kgrec.rank.parts import normalise
from kgrec.rank.ranking import Catalog, rank

EntityKind = Literal["brand", "category", "product"]
PART_NAMES: tuple[str, ...] = ("lexical", "dense", "entity", "personal")

STOP_WORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or the to with without & + vs".split()
)
"""Words that carry no meaning for matching; left out of the Lucene query and of name matching."""

LUCENE_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/]|&&|\|\|)')
WORD = re.compile(r"\w+(?:['’]\w+)*")


def tokenise(text: str) -> list[str]:
    """The lower-case words of ``text`` (letters and digits; ``l'oreal`` stays one word), in order."""
    return [word.replace("’", "'") for word in WORD.findall(text.lower())]


def content_words(words: Iterable[str]) -> list[str]:
    """``words`` without stop words and repeats, in order."""
    seen: set[str] = set()
    out = []
    for word in words:
        if word not in STOP_WORDS and word not in seen:
            seen.add(word)
            out.append(word)
    return out


def escape_lucene(text: str) -> str:
    """``text`` with every Lucene query-syntax character escaped by a backslash.

    ``+ - && || ! ( ) { } [ ] ^ " ~ * ? : \\ /``: the text then matches literally.
    """
    return LUCENE_SPECIAL.sub(lambda m: "".join("\\" + ch for ch in m.group(1)), text)


def fuzzy_edits(word: str) -> int:
    """Edits allowed for a typo in ``word``: 0 up to 2 characters, 1 up to 5, else 2."""
    n = len(word)
    return 0 if n <= 2 else 1 if n <= 5 else 2


def lucene_query(words: Sequence[str], fuzzy: bool = True, exact: Iterable[str] = ()) -> str:
    """Lucene query text matching any of ``words`` (OR), each escaped; ``word~N`` for typos.

    Words in ``exact`` (spelt exactly like a brand or category name, :func:`name_words`) are
    matched as spelt: a typo of a word the shop knows is not searched for.

    Returns ``""`` when no word is left (all stop words). Pass it as a parameter to
    ``db.index.fulltext.queryNodes``; never paste it into Cypher.
    """
    exact = frozenset(exact)
    terms = []
    for word in content_words(words):
        term = escape_lucene(word)
        edits = fuzzy_edits(word) if fuzzy and word not in exact else 0
        terms.append(f"{term}~{edits}" if edits else term)
    return " ".join(terms)


def edit_distance(a: str, b: str, limit: int = 2) -> int:
    """Levenshtein distance with adjacent transpositions (optimal string alignment),
    capped at ``limit + 1``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[-1], limit + 1)


def word_matches(query_word: str, name_word: str, fuzzy: bool = True) -> bool:
    """Whether ``query_word`` names ``name_word``: equal, or within :func:`fuzzy_edits` of it."""
    if query_word == name_word:
        return True
    edits = min(fuzzy_edits(query_word), fuzzy_edits(name_word)) if fuzzy else 0
    return edits > 0 and edit_distance(query_word, name_word, edits) <= edits


@dataclass(frozen=True)
class EntityHit:
    """A brand or category the entity index returned for the query."""

    kind: EntityKind
    key: str  # the brand name, the category path or the product id
    name: str  # the brand name, the category's own name or the product title
    score: float = 0.0


@dataclass(frozen=True)
class LinkedEntity:
    """A brand, category or product the query names, with the query words that name it."""

    kind: EntityKind
    key: str
    name: str
    words: tuple[str, ...]

    def label(self) -> str:
        if self.kind == "product":
            return f"{self.key} ({self.name})" if self.name else self.key
        return self.key

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "key": self.key, "name": self.name, "words": list(self.words)}


def _matched_words(name: str, words: Sequence[str], fuzzy: bool, exact: frozenset[str] = frozenset()) -> tuple[str, ...] | None:
    """The query words naming every content word of ``name``; None when one is not named.
    Words in ``exact`` (spelt exactly like some name) name nothing by a typo."""
    wanted = content_words(tokenise(name))
    if not wanted:
        return None
    matched = []
    for name_word in wanted:
        found = next((w for w in words if word_matches(w, name_word, fuzzy and w not in exact)), None)
        if found is None:
            return None
        matched.append(found)
    return tuple(dict.fromkeys(matched))


def _path_names(path: str) -> list[str]:
    return [part.strip() for part in path.split(">") if part.strip()]


def name_words(hits: Iterable[EntityHit]) -> frozenset[str]:
    """The words of the brand and category names among ``hits``: a query word spelt like one
    of them is no typo."""
    return frozenset(w for hit in hits if hit.kind != "product" for w in tokenise(hit.name))


def link_entities(
    words: Sequence[str], hits: Iterable[EntityHit], fuzzy: bool = True, catalog_words: Iterable[str] = ()
) -> list[LinkedEntity]:
    """The hits the query really names: every content word of the name is in ``words``.

    A full-text hit only shares a word (or a near one) with the query; a brand "Blue
    Lagoon" is linked by "blue lagoon shampoo" but not by "blue mascara". A typo counts
    only for a word that is spelt neither exactly like one of the hits' names nor like a
    word of the catalog's product titles (``catalog_words``): "stapler" in an office shop
    is a stapler, not a typo of the brand Stanley, while "stanly" still finds it. Among the
    categories: one that is an ancestor of another linked one is dropped ("makeup eyes"
    → "Makeup > Eyes", not "Makeup" as well); of categories with the same name, those
    whose path shares the most words with the query are kept ("makeup eyes" → "Beauty >
    Makeup > Eyes", not "Beauty > Skin Care > Eyes"). Products are linked by their id
    upstream and pass through.

    Returns:
        brands, then categories, then products, each in hit order.
    """
    words = content_words(words)
    hits = list(hits)
    # A word spelt exactly like a name is not also a typo of another ("nevria" is not "nevtis").
    exact = (name_words(hits) | frozenset(catalog_words)) & frozenset(words)
    brands: dict[str, LinkedEntity] = {}
    categories: dict[str, LinkedEntity] = {}
    products: dict[str, LinkedEntity] = {}
    for hit in hits:
        if hit.kind == "product":
            products.setdefault(hit.key, LinkedEntity("product", hit.key, hit.name, ()))
            continue
        matched = _matched_words(hit.name, words, fuzzy, exact)
        if matched is None:
            continue
        target = brands if hit.kind == "brand" else categories
        target.setdefault(hit.key, LinkedEntity(hit.kind, hit.key, hit.name, matched))
    # The most specific categories: drop ancestors of other linked ones.
    paths = list(categories)
    specific = [p for p in paths if not any(other != p and other.startswith(p + " > ") for other in paths)]

    def path_words(path: str) -> int:
        named = {w for part in _path_names(path) for w in content_words(tokenise(part))}
        return sum(any(word_matches(w, n, fuzzy) for n in named) for w in words)

    best: dict[str, int] = {}
    for path in specific:
        name = categories[path].name.lower()
        best[name] = max(best.get(name, 0), path_words(path))
    kept = [categories[p] for p in specific if path_words(p) == best[categories[p].name.lower()]]
    return [*brands.values(), *kept, *products.values()]


def describe_entities(entities: Sequence[LinkedEntity]) -> str:
    """``"brand: Lumen; category: Beauty > Makeup > Eyes"``; ``""`` when nothing was recognised."""
    groups: dict[str, list[str]] = {}
    for entity in entities:
        groups.setdefault(entity.kind, []).append(entity.label())
    return "; ".join(f"{kind}: {', '.join(labels)}" for kind, labels in groups.items())


@torch.no_grad()
def candidate_positions(candidates: Tensor, product_index: Tensor) -> tuple[Tensor, Tensor]:
    """Where the products ``product_index`` sit among the candidates.

    Args:
        candidates: ``[n]`` long, sorted distinct product indices.
        product_index: ``[m]`` long product indices.

    Returns:
        ``(position [m], found [m])``: ``candidates[position[i]] == product_index[i]`` where
        ``found[i]``; ``position`` is meaningless elsewhere.
    """
    product_index = product_index.long()
    if candidates.numel() == 0:
        return torch.zeros_like(product_index), torch.zeros_like(product_index, dtype=torch.bool)
    position = torch.searchsorted(candidates, product_index).clamp(max=candidates.numel() - 1)
    return position, candidates[position] == product_index


@torch.no_grad()
def candidate_scores(candidates: Tensor, product_index: Tensor, scores: Tensor) -> Tensor:
    """``[n]`` float: ``scores[i]`` at the candidate ``product_index[i]``, 0 for every other candidate.

    Products that are not candidates are dropped (``entity_mode=filter`` keeps only the named ones).
    """
    out = torch.zeros(candidates.numel())
    position, found = candidate_positions(candidates, product_index)
    out[position[found]] = scores.float()[found]
    return out


@torch.no_grad()
def entity_match(memberships: Sequence[Tensor], candidates: Tensor) -> Tensor:
    """``[n]`` share of the named kinds each candidate matches.

    Args:
        memberships: one ``[n_i]`` long tensor of product indices per named kind (brand,
            category, product): the products of any named brand, of any named category (with
            its subcategories), the named products.
        candidates: ``[n]`` long, sorted distinct product indices.

    Returns:
        ``[n]`` float in ``[0, 1]``: 1 for a candidate that matches every named kind (the
        brand and the category), 0.5 for one of two, 0 without any (or when nothing was named).
    """
    out = torch.zeros(candidates.numel())
    for members in memberships:
        out += torch.isin(candidates, members.long()).float()
    return out / len(memberships) if memberships else out


@torch.no_grad()
def normalise_parts(parts: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each part (``[n]``, one value per candidate) mapped to ``[0, 1]`` over the candidates.

    ``lexical`` (a full-text score, 0 = no hit) and ``entity`` (already a share) are
    divided by their maximum, so a product without a hit stays at 0; ``dense`` and
    ``personal`` (similarities of any sign) are min-max normalised.

    Args:
        parts: name → ``[n]`` raw scores; names from :data:`PART_NAMES`.

    Returns:
        name → ``[n]`` float32.
    """
    out = {}
    for name, values in parts.items():
        if name not in PART_NAMES:
            raise ValueError(f"normalise_parts: unknown part {name!r}; expected one of {', '.join(PART_NAMES)}.")
        values = values.float()
        if name in ("lexical", "entity"):
            top = float(values.max()) if values.numel() else 0.0
            out[name] = (values / top).clamp(0.0, 1.0) if top > 0 else torch.zeros_like(values)
        else:
            out[name] = normalise(values, "minmax")
    return out


def active_mix(mix: dict[str, float], present: Iterable[str]) -> dict[str, float]:
    """The weights of the parts in use (``present``), rescaled to sum to 1.

    Raises:
        ConfigError: every part in use weighs 0.
    """
    present = set(present)
    used = {name: float(mix.get(name, 0.0)) for name in PART_NAMES if name in present}
    total = sum(used.values())
    if total <= 0:
        raise ConfigError(
            f"The search weights of the parts in use ({', '.join(used) or 'none'}) are all 0; give one a positive "
            "value, e.g. --set search.lexical=0.3."
        )
    return {name: value / total for name, value in used.items()}


@torch.no_grad()
def hybrid_relevance(parts: dict[str, Tensor], mix: dict[str, float]) -> Tensor:
    """``[n]`` Σ mix[name]·parts[name], one value per candidate.

    ``parts`` are normalised already (:func:`normalise_parts`); ``mix`` from :func:`active_mix`.
    """
    if not parts:
        raise ValueError("hybrid_relevance: no parts to mix.")
    total = torch.zeros_like(next(iter(parts.values())), dtype=torch.float32)
    for name, weight in mix.items():
        total += weight * parts[name].float()
    return total


@torch.no_grad()
def rank_candidates(
    relevance: Tensor, candidates: Tensor, catalog: Catalog, params: RankParams, histories: Histories | None = None
) -> RankedList:
    """Rank the candidates alone for one user: :func:`~kgrec.rank.ranking.rank` on the catalog
    cut down to them, so the work grows with the candidates (a few thousand), not the catalog.

    The result is the full ranking's: every other product would have relevance ``-inf`` and
    never be a candidate; popularity is normalised over the candidates either way, and the
    exploration bonus of a product depends on the user's history only.

    Args:
        relevance: ``[n]`` mixed relevance of each candidate (:func:`hybrid_relevance`).
        candidates: ``[n]`` long, sorted distinct product indices.
        catalog: the whole catalog's popularity, exploration structure and embeddings.
        params: weights, k, ``include_seen``.
        histories: the user's current products (one row): left out unless
            ``params.include_seen``, and the origin of the exploration bonus.

    Returns:
        :class:`~kgrec.rank.engine.RankedList` of ``[1, k]`` catalog product indices, best first
        (``[1, 0]`` without candidates).
    """
    if candidates.numel() == 0:
        none = torch.zeros((1, 0))
        return RankedList(none.long(), none, none, none, none)
    relevance = relevance.float().clone()
    if histories is not None and not params.include_seen:
        position, found = candidate_positions(candidates, histories.product_index)
        relevance[position[found]] = -torch.inf
    exploration = embedding = None
    if params.weights.diversity > 0:  # the bonus of the candidates: it depends on the user's history alone
        exploration = catalog.exploration
        if isinstance(exploration, ExplorationGraph):
            if histories is None:
                indptr, seen = torch.zeros(2, dtype=torch.long), torch.zeros(0, dtype=torch.long)
            else:
                indptr, seen = histories.indptr, histories.product_index
            exploration = exploration.bonus(indptr, seen, candidates.unsqueeze(0))
        elif exploration is not None:
            exploration = exploration.reshape(-1, catalog.num_products)[:, candidates]
        embedding = catalog.product_embedding[candidates] if catalog.product_embedding is not None else None
    cut = Catalog(popularity=catalog.popularity[candidates], exploration=exploration, product_embedding=embedding)
    ranked = rank(relevance.unsqueeze(0), cut, params)
    index = ranked.product_index
    return replace(ranked, product_index=torch.where(index >= 0, candidates[index.clamp(min=0)], index))
