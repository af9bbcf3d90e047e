"""Settings of the final scoring: the weights of its three parts and how each is built.

``score = relevance·r + popularity·p + diversity·d`` where ``r``, ``p`` and ``d`` are
the normalised parts (see :mod:`kgrec.rank.ranking` and docs/RANKING.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ExplorationLevels(BaseModel):
    """The exploration bonus of an unseen product, by how it sits next to the user's history.

    A product gets the highest level that applies to it; 0 when none does (far from
    everything the user touched), and always 0 for a product the user has seen.
    """

    model_config = ConfigDict(extra="forbid")

    new_brand_same_category: float = Field(
        1.0, ge=0, le=1, description="In a category the user touched, by a brand the user has not touched (or no brand)."
    )
    nearby_category: float = Field(
        0.75,
        ge=0,
        le=1,
        description="In a category one step from a touched one in the category tree (sibling, parent or child).",
    )
    known_brand_new_category: float = Field(
        0.5, ge=0, le=1, description="By a brand the user touched, in a category far from the user's ones."
    )
    neighbour_brand: float = Field(
        0.25,
        ge=0,
        le=1,
        description=(
            "By a brand next to the user's brands: it sells in a category the user touched, "
            "or is linked to a touched brand by the optional brand_neighbours edges."
        ),
    )
    familiar: float = Field(
        0.25, ge=0, le=1, description="In a touched category and by a touched brand: more of the same, little to explore."
    )


class RankConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    relevance: float = Field(0.7, ge=0, description="Weight of the personal relevance part (the three weights are rescaled to sum to 1).")
    popularity: float = Field(0.1, ge=0, description="Weight of the time-decayed popularity part.")
    diversity: float = Field(0.2, ge=0, description="Weight of the explorative diversity part.")
    popularity_half_life_days: float = Field(30.0, gt=0, description="Half-life of an event's weight in popularity.")
    co_interaction_weight: float = Field(
        0.1,
        ge=0,
        description=(
            "Inside relevance: the weight of the co-interaction paths (product <- user -> product) to the user's "
            "current products, added to the cosine of the user and product vectors. A product's paths are the sum "
            "of its similarities (shared users over the geometric mean of their users) to those products, scaled so "
            "the user's best product has 1; read at every request, from the user's events of that moment. 0: the "
            "cosine alone. Needs a model with co-interactions (model.co_interaction_neighbours > 0). "
            "docs/MODEL.md, 'Co-interaction paths in the score'."
        ),
    )

    k: int = Field(10, ge=1, description="How many products to recommend per user.")
    query_mix: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "With --query: share of the query's similarity to product texts in relevance; "
            "relevance = (1 - query_mix)·personal + query_mix·query, both min-max normalised first."
        ),
    )
    normalisation: Literal["minmax", "rank"] = Field(
        "minmax",
        description=(
            "How relevance and popularity are mapped to [0, 1] over the user's candidates: 'minmax' "
            "(best 1, worst 0) or 'rank' (percentile of the product's rank)."
        ),
    )
    num_candidates: int = Field(
        200, ge=1, description="Top products by relevance and popularity that the diversity re-ranking (MMR) looks at, per user (one user or all)."
    )
    exploration_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Split of the diversity part: exploration_share·(knowledge-graph exploration bonus) + "
            "(1 - exploration_share)·(1 - max cosine similarity to the products already picked)."
        ),
    )
    exploration: ExplorationLevels = Field(
        default_factory=ExplorationLevels, description="Exploration bonus per kind of closeness to the user's history."
    )
    batch_size: int = Field(256, ge=1, description="Users ranked at once when ranking every user (memory ~ 3 × batch × products floats).")
    num_threads: int | None = Field(
        None,
        ge=1,
        description=(
            "Torch threads while ranking every user (None: leave as is). 1 helps on a machine whose cores "
            "are busy with other work, where OpenMP threads otherwise spin-wait for each other."
        ),
    )
    new_products: bool = Field(
        True,
        description=(
            "Also rank products added to Neo4j after training, placed by their brand, categories, related "
            "products and text (docs/RANKING.md). Needs the database; read once when the model is loaded."
        ),
    )
    request_threads: int = Field(
        1,
        ge=1,
        description=(
            "Torch threads while ranking for one user (recommend, serve, search), apart from the catalog scan "
            "(scan_threads). 1 is fastest on small and large catalogs alike: a request is many small steps."
        ),
    )
    scan_threads: int = Field(
        2,
        ge=1,
        description=(
            "Torch threads for one user's scan of the whole catalog (every product's relevance), at most the "
            "machine's cores. The scan is one matrix product bound by memory bandwidth, which a second core "
            "adds to; every other step of a request runs on request_threads."
        ),
    )
    exact_max_products: int = Field(
        200_000,
        ge=0,
        description=(
            "Catalogs up to this many products are ranked by scoring every product; larger ones rank "
            "retrieved candidates only (retrieval_candidates per user plus as many popular products)."
        ),
    )
    retrieval: Literal["exact", "ivf", "pca"] = Field(
        "ivf",
        description=(
            "How a large catalog's candidates are found: 'exact' (every product scored in blocks, a running "
            "top-k), 'ivf' (faiss inverted-file index, approximate, much faster; needs faiss-cpu) or 'pca' "
            "(every product scored in the product vectors' top pca_components principal directions, the "
            "candidates then scored exactly: for wide vectors, e.g. two 128-d members, at 100k-200k products)."
        ),
    )
    retrieval_candidates: int = Field(
        400, ge=1, description="Products retrieved per user by relevance and popularity on a large catalog (at least num_candidates)."
    )
    retrieval_probes: int = Field(
        64, ge=1, description="With retrieval 'ivf': the index's lists (about sqrt(products) in all) a user's search scans."
    )
    pca_components: int = Field(
        64, ge=1, description="With retrieval 'pca': the principal directions of the product vectors each product is scored in."
    )
    reasons_per_product: int = Field(3, ge=0, description="Knowledge-graph reasons kept per recommended product (--explain).")
    explain_history_limit: int = Field(
        50, ge=1, description="The user's strongest history products that explanation paths start from."
    )
    co_interaction_limit: int = Field(
        100, ge=1, description="Other users looked at per recommended product when counting co-interactions (caps fan-out)."
    )

    @model_validator(mode="after")
    def _some_weight(self) -> RankConfig:
        if self.relevance + self.popularity + self.diversity <= 0:
            raise ValueError(
                "relevance, popularity and diversity are all 0; give at least one a positive weight "
                "(e.g. relevance=0.7, popularity=0.1, diversity=0.2)"
            )
        if self.retrieval_candidates < self.num_candidates:
            raise ValueError(
                f"retrieval_candidates ({self.retrieval_candidates}) must be at least num_candidates "
                f"({self.num_candidates}): the diversity re-ranking picks its pool among the retrieved products"
            )
        return self

    @property
    def weights(self) -> tuple[float, float, float]:
        """``(relevance, popularity, diversity)`` as configured (not rescaled)."""
        return (self.relevance, self.popularity, self.diversity)


class SearchConfig(BaseModel):
    """Search (`kgrec search`, GET /search): how a query's candidates are found and scored.

    relevance = (lexical·l + dense·d + entity·e + personal·p) / (the sum of the weights in
    use), each part normalised to [0, 1] over the candidates; entity counts only when the
    query names a brand, category or product, personal only for a user. The score then
    mixes relevance with popularity and diversity like a recommendation.
    """

    model_config = ConfigDict(extra="forbid")

    lexical: float = Field(0.3, ge=0, description="Weight of the full-text (Lucene) match on product id, title, description, brand and category names.")
    dense: float = Field(0.3, ge=0, description="Weight of the text-embedding similarity of the query to the product text.")
    entity: float = Field(0.2, ge=0, description="Weight of the match with the brands, categories and products the query names.")
    personal: float = Field(0.2, ge=0, description="Weight of the user's personal relevance (only when a user is given).")
    entity_mode: Literal["boost", "filter"] = Field(
        "boost",
        description=(
            "'boost': named brands and categories raise their products' score; 'filter': when the query "
            "names any, only their products are candidates."
        ),
    )
    relevance: float = Field(0.9, ge=0, description="Weight of the mixed search relevance in the final score.")
    popularity: float = Field(0.1, ge=0, description="Weight of the time-decayed popularity in the final score.")
    diversity: float = Field(0.0, ge=0, description="Weight of the explorative diversity in the final score (MMR re-ranking).")
    lexical_candidates: int = Field(200, ge=1, description="Full-text hits taken as candidates.")
    dense_candidates: int = Field(200, ge=0, description="Products closest to the query's text embedding taken as candidates.")
    entity_candidates: int = Field(5000, ge=1, description="At most this many products of each named brand or category taken as candidates.")
    entity_hits: int = Field(50, ge=1, description="Brand and category names the entity index returns before each is checked against the query's words.")
    fuzzy: bool = Field(True, description="Match words with typos: 1 edit for 3-5 letters, 2 for longer words (Lucene term~). A word spelt exactly like a brand or category name is matched as spelt in the product index.")
    include_seen: bool = Field(False, description="With a user: also rank products the user already interacted with.")

    @model_validator(mode="after")
    def _some_weight(self) -> SearchConfig:
        if self.lexical + self.dense <= 0:
            raise ValueError("lexical and dense are both 0; give at least one of them a positive weight (e.g. lexical=0.3, dense=0.3)")
        if self.relevance + self.popularity + self.diversity <= 0:
            raise ValueError("relevance, popularity and diversity are all 0; give at least one a positive weight (e.g. relevance=0.9)")
        return self

    @property
    def weights(self) -> tuple[float, float, float]:
        """``(relevance, popularity, diversity)`` as configured (not rescaled)."""
        return (self.relevance, self.popularity, self.diversity)

    @property
    def mix(self) -> dict[str, float]:
        """The weights of the relevance parts as configured."""
        return {"lexical": self.lexical, "dense": self.dense, "entity": self.entity, "personal": self.personal}
