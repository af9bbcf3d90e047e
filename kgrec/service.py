"""Recommendations from a trained model: one warm object for the CLI, batch jobs and HTTP.

:class:`RecommendationService` loads a model directory once (embeddings, the snapshot
it was trained on, popularity, the catalog structure) and answers requests.

The real-time rule: a user's vector is recomputed at every request from their latest
interactions *in Neo4j* through the trained product embeddings, with the same
recency-weighted rule the model was trained with (the latest ``model.history_length``
products, each product once at its latest event and heaviest weight, the product k
steps back weighted ``model.recency_decay ** k`` times its event weight). So events
written after training (``kgrec build-graph`` with new events, or ``kgrec add-event``)
change the next recommendations without retraining. Without a database the
histories of the model's snapshot are used.

Products written to Neo4j after training are ranked too (``rank.new_products``): when
the model is loaded they are read from the graph and placed in the embedding space by
their brand, categories, related products and text (:mod:`kgrec.rank.new_products`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from kgrec.config import KgrecConfig
from kgrec.errors import ConfigError, GraphStoreUnavailable, UnknownProductError, UnknownUserError
from kgrec.explain.paths import explain_paths, write_recommendations
from kgrec.rank.new_products import embed_new_products
from kgrec.rank.scoring import (
    ExplorationGraph,
    SortedValues,
    check_weights,
    decayed_popularity,
    rank_all_users,
    rank_products,
    relevance,
    torch_threads,
)
from kgrec.snapshot.idmap import IdMap
from kgrec.snapshot.snapshot import Snapshot, load_snapshot
from kgrec.store.connection import GraphStore, query
from kgrec.train.artifacts import TrainedModel, load_model_dir

MODEL_SNAPSHOT_DIR = "snapshot"
MAX_K = 1000

log = logging.getLogger(__name__)


@dataclass
class History:
    """A user's products, oldest first, each once (latest event, heaviest weight)."""

    product_index: Tensor  # [n] long
    weight: Tensor  # [n] float
    unknown_products: int = 0  # events on products the model has no embedding for


@dataclass
class Recommendations:
    user_id: str
    model: str
    weights: dict[str, float]
    query: str | None
    history_size: int
    items: list[dict[str, Any]] = field(default_factory=list)
    explained: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "model": self.model,
            "weights": self.weights,
            "query": self.query,
            "history_size": self.history_size,
            "explained": self.explained,
            "items": self.items,
        }


class RecommendationService:
    """A trained model kept warm, with the graph store it reads histories from.

    Args:
        config: the run config; its ``rank`` section sets weights, k and the rest.
        model_dir: a model directory, its parent (``latest`` is used) or the pointer.
        store: the live graph; None ranks from the model's snapshot alone (no
            real-time updates, no explanations).
    """

    def __init__(self, config: KgrecConfig, model_dir: str | Path, store: GraphStore | None = None):
        self.config = config
        self.model: TrainedModel = load_model_dir(model_dir)
        self.model_id = self.model.path.name
        self.snapshot: Snapshot = load_snapshot(self.model.path / MODEL_SNAPSHOT_DIR)
        self.store = store
        self._text_encoder = None
        new_products = self._read_new_products() if store is not None and config.rank.new_products else None
        products = self.snapshot.tables.products.select("product_id", "title", "brand", "categories")
        if new_products is not None:
            products = pl.concat([products, new_products.select(products.columns)], how="vertical_relaxed")
        self.catalog = products.select(
            "product_id",
            "title",
            "brand",
            pl.col("categories").list.first().alias("category"),
        )
        interactions = self.snapshot.tables.interactions
        product_index = torch.from_numpy(self.snapshot.product_ids.indices(interactions.get_column("product_id")).copy())
        timestamp = torch.from_numpy(interactions.get_column("timestamp").to_numpy().copy())
        self.popularity = decayed_popularity(
            product_index,
            timestamp,
            torch.from_numpy(interactions.get_column("weight").to_numpy().astype("float32")),
            len(self.product_ids),  # new products have no training-time popularity
            now=int(timestamp.max()) if timestamp.numel() else int(time.time()),
            half_life_days=config.rank.popularity_half_life_days,
        )
        self.exploration = ExplorationGraph.from_snapshot(
            self.snapshot, levels=config.rank.exploration, extra_products=new_products
        )
        self._sorted_popularity = SortedValues(self.popularity)  # sorted once, not per request
        # Python lists: picking 10 rows out of them costs microseconds, a polars gather ~0.5 ms.
        self._catalog_columns = {name: self.catalog.get_column(name).to_list() for name in self.catalog.columns}
        # [dim, P], contiguous: a user vector times it reads the catalog row by row, which is
        # about 1.7x faster than a product against the transposed view (1.0 against 1.7 ms at 100k).
        self._product_embedding_t = self.model.product_embedding.T.contiguous()

    @property
    def product_ids(self) -> IdMap:
        """The products this service ranks: the model's, then any placed new ones."""
        return self.model.product_ids

    def _read_new_products(self) -> pl.DataFrame | None:
        """Place the graph's products that the model lacks; returns their rows (None if none)."""
        assert self.store is not None
        known = self.model.product_ids.ids.to_list()
        rows = self.store.read_columns(query("read_new_products"), {"known": known})
        if not rows.get("product_id"):
            return None
        schema = {
            "product_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "brand": pl.Utf8,
            "categories": pl.List(pl.Utf8), "related": pl.List(pl.Utf8),
        }
        products = pl.DataFrame({name: rows[name] for name in schema}, schema=schema)
        new_text = None
        if self.model.product_text is not None:
            from kgrec.features.text import encode_products

            new_text = encode_products(products, self._features_config(), progress=False)
        model = self.model
        embedding, placed = embed_new_products(
            products,
            model.product_embedding, model.product_ids,
            model.brand_embedding, model.brand_ids,
            model.category_embedding, model.category_ids,
            new_text=new_text, catalog_text=model.product_text,
        )
        if not bool(placed.all()):
            log.warning(
                "%d product(s) added after training have no brand, category, related product or text the model "
                "knows; they are left out until the next `kgrec train`.", int((~placed).sum())
            )
        products = products.filter(pl.Series(placed.numpy()))
        if products.is_empty():
            return None
        self.model = replace(
            model,
            product_ids=IdMap(pl.concat([model.product_ids.ids, products.get_column("product_id")]), kind="product"),
            product_embedding=torch.cat([model.product_embedding, embedding]),
            product_text=None if new_text is None else torch.cat([model.product_text, new_text[placed].to(model.product_text)]),
        )
        log.info("Ranking %d product(s) added after training through their graph neighbours.", products.height)
        return products

    def _features_config(self):
        from kgrec.features.config import FeaturesConfig

        return FeaturesConfig.model_validate(self.model.config.get("features", {}))

    # --- histories -------------------------------------------------------------------

    def history(self, user_id: str) -> History:
        """The user's products for the real-time rule; :class:`UnknownUserError` if none is known."""
        if self.store is not None:
            rows = self.store.read_now(query("read_user_history"), {"user_id": user_id})
            if not rows:
                raise self._unknown_user(user_id)
            events = rows[0]["events"]
        else:
            frame = self.snapshot.tables.interactions.filter(pl.col("user_id") == user_id)
            if frame.is_empty() and user_id not in self.model.user_ids:
                raise self._unknown_user(user_id)
            events = frame.select("product_id", "timestamp", "weight").rows()
        return self._history_from_events(events)

    def _history_from_events(self, events: list) -> History:
        """``[(product_id, timestamp, weight)]`` → one entry per product, at its latest event
        with its heaviest weight, oldest first (ties by id), as in training's pairs.

        Plain Python: a history is short, and this runs at every request."""
        latest: dict[str, list] = {}
        for product_id, timestamp, weight in events:
            seen = latest.get(product_id)
            if seen is None:
                latest[product_id] = [timestamp, weight]
            else:
                seen[0], seen[1] = max(seen[0], timestamp), max(seen[1], weight)
        ordered = sorted(latest.items(), key=lambda item: (item[1][0], item[0]))
        index = self.product_ids.indices([product_id for product_id, _ in ordered], strict=False)
        known = index >= 0
        weights = np.asarray([w for _, (_, w) in ordered], dtype=np.float32)
        return History(
            product_index=torch.from_numpy(index[known].copy()),
            weight=torch.from_numpy(weights[known].copy()) if len(ordered) else torch.zeros(0),
            unknown_products=int((~known).sum()),
        )

    def _unknown_user(self, user_id: str) -> UnknownUserError:
        return UnknownUserError(
            f"User {user_id!r} is not in the graph ({len(self.model.user_ids):,} users in model {self.model_id}). "
            "New users need at least one interaction: load their events with `kgrec build-graph` or `kgrec add-event`."
        )

    # --- one user ------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int | None = None,
        query_text: str | None = None,
        weights: tuple[float, float, float] | None = None,
        include_seen: bool = False,
        explain: bool = False,
    ) -> Recommendations:
        """Top-``k`` products for ``user_id``, each with its score broken into its three parts."""
        k = self.config.rank.k if k is None else k
        num_products = len(self.model.product_ids)
        if not 1 <= k <= min(MAX_K, num_products):
            raise ConfigError(f"k must be between 1 and {min(MAX_K, num_products)} (the catalog size caps it), found {k}.")
        if query_text is not None and not query_text.strip():
            raise ConfigError("The query is empty. Pass some text, e.g. --query 'waterproof mascara', or leave --query out.")
        alpha, beta, gamma = check_weights(weights if weights is not None else self.config.rank.weights)
        if explain and self.store is None:
            raise GraphStoreUnavailable("Explanations are read from and written to Neo4j, but no database is connected.")

        history = self.history(user_id)
        # One thread: a request is many small tensor steps, where a second thread's start-up
        # costs more than it saves (measured: 6 ms against 11 ms at 100k products).
        with torch_threads(self.config.rank.request_threads):
            user_vector = self.model.user_vector(history.product_index, history.weight)
            query_vector = self._encode_query(query_text) if query_text is not None else None
            # Product embeddings and user vectors are unit length already, so cosine is the dot
            # product: no re-normalising of every product at every request.
            if query_vector is None:
                # The ranker min-max normalises over the candidates itself; relevance()'s
                # normalisation over the catalog first would change no result.
                rel = user_vector @ self._product_embedding_t
            else:
                rel = relevance(
                    user_vector,
                    self.model.product_embedding,
                    query_vector,
                    self.model.product_text,
                    query_mix=self.config.rank.query_mix,
                    similarity="dot",
                )
            seen_index = history.product_index.unique()
            seen_indptr = torch.tensor([0, seen_index.numel()])
            ranked = rank_products(
                rel,
                self.popularity,
                lambda pool: self.exploration.bonus(seen_indptr, seen_index, pool),  # the pool only
                (alpha, beta, gamma),
                k,
                exclude=None if include_seen else seen_index,
                product_embeddings=self.model.product_embedding,
                num_candidates=self.config.rank.num_candidates,
                exploration_share=self.config.rank.exploration_share,
                normalisation=self.config.rank.normalisation,
                sorted_popularity=self._sorted_popularity,
            )
        items = self._items(ranked.rows())
        result = Recommendations(
            user_id=user_id,
            model=self.model_id,
            weights={"relevance": alpha, "popularity": beta, "diversity": gamma},
            query=query_text,
            history_size=int(history.product_index.numel()),
            items=items,
        )
        if explain:
            self._explain(result)
        return result

    def _items(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        columns = self._catalog_columns
        items = []
        for rank, row in enumerate(rows, start=1):
            index = row["product_index"]
            items.append(
                {
                    "rank": rank,
                    **{name: values[index] for name, values in columns.items()},
                    "score": round(float(row["score"]), 6),
                    "relevance": round(float(row["relevance"]), 6),
                    "popularity": round(float(row["popularity"]), 6),
                    "diversity": round(float(row["diversity"]), 6),
                }
            )
        return items

    def _explain(self, result: Recommendations) -> None:
        rank_cfg = self.config.rank
        reasons = explain_paths(
            self.store,
            result.user_id,
            [item["product_id"] for item in result.items],
            per_product=rank_cfg.reasons_per_product,
            history_limit=rank_cfg.explain_history_limit,
            co_interaction_limit=rank_cfg.co_interaction_limit,
            half_life_days=rank_cfg.popularity_half_life_days,
        )
        for item in result.items:
            item["reasons"] = [
                {"kind": r.kind, "text": r.text, "via_product_id": r.via_product_id, "via": r.via, "strength": round(r.strength, 4)}
                for r in reasons.get(item["product_id"], [])
            ]
        write_recommendations(self.store, result.user_id, result.model, result.items)
        result.explained = True

    def _encode_query(self, text: str) -> Tensor:
        if self.model.product_text is None:
            raise ConfigError(
                f"Model {self.model_id} was trained without text (model.use_text=false), so it cannot search by query."
            )
        if self._text_encoder is None:
            from kgrec.features.text import load_text_encoder

            self._text_encoder = load_text_encoder(self._features_config())
        return self._text_encoder.encode([text])[0]

    # --- all users -------------------------------------------------------------------

    def recommend_all(self, out_path: str | Path, k: int | None = None, weights: tuple[float, float, float] | None = None) -> int:
        """Top-``k`` for every user of the model as JSON lines; returns the number of users.

        Users are represented by the histories they had at training time (one matrix
        product per batch of users); products they interacted with are excluded.
        """
        k = self.config.rank.k if k is None else k
        if not 1 <= k <= min(MAX_K, len(self.model.product_ids)):
            raise ConfigError(f"k must be between 1 and {min(MAX_K, len(self.model.product_ids))}, found {k}.")
        rank_cfg = self.config.rank
        interactions = self.snapshot.tables.interactions
        user_index = torch.from_numpy(self.snapshot.user_ids.indices(interactions.get_column("user_id")).copy())
        product_index = torch.from_numpy(self.snapshot.product_ids.indices(interactions.get_column("product_id")).copy())
        order = torch.argsort(user_index, stable=True)
        counts = torch.bincount(user_index, minlength=len(self.snapshot.user_ids)).tolist()
        seen = list(torch.split(product_index[order], counts))
        top_index, top_score = rank_all_users(
            self.model.user_embedding,
            self.model.product_embedding,
            seen,
            self.popularity,
            k,
            check_weights(weights if weights is not None else rank_cfg.weights),
            batch_size=rank_cfg.batch_size,
            exploration=self.exploration,
            similarity=rank_cfg.similarity,
            num_candidates=rank_cfg.all_users_candidates,
            exploration_share=rank_cfg.exploration_share,
            normalisation=rank_cfg.normalisation,
            num_threads=rank_cfg.num_threads,
        )
        # One long frame of (user row, product index, score), grouped back into lists: no
        # per-user Python work. Padding (-1: fewer than k products left) is dropped.
        num_users, width = top_index.shape
        ranked = pl.DataFrame(
            {
                "row": torch.arange(num_users).repeat_interleave(width).numpy(),
                "index": top_index.flatten().numpy(),
                "score": top_score.flatten().numpy(),
            }
        ).filter(pl.col("index") >= 0)
        ranked = ranked.with_columns(
            self.model.product_ids.ids.gather(ranked.get_column("index")).alias("item"), pl.col("score").round(6)
        )
        lists = ranked.group_by("row").agg(pl.col("item").alias("items"), pl.col("score").alias("scores"))
        frame = (
            pl.DataFrame({"user_id": self.model.user_ids.ids})
            .with_row_index("row")
            .join(lists, on="row", how="left")
            .select(
                "user_id",
                pl.col("items").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
                pl.col("scores").fill_null(pl.lit([], dtype=pl.List(pl.Float32))),
            )
        )
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        frame.write_ndjson(tmp)
        tmp.replace(out)
        return frame.height

    def product_index(self, product_id: str) -> int:
        index = self.product_ids.indices([product_id], strict=False)[0]
        if index < 0:
            raise UnknownProductError(
                f"Product {product_id!r} is not in model {self.model_id} ({len(self.model.product_ids):,} products)."
            )
        return int(index)


def dumps(result: Recommendations) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=2)
