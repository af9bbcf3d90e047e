"""A trained model kept warm: the recommender, what ranking needs of the catalog, and the graph.

:class:`LoadedModel` loads a model directory once (embeddings, the snapshot it was
trained on, popularity, the catalog structure) for the CLI, batch jobs and HTTP. The
jobs themselves are plain functions in :mod:`kgrec.pipeline`.

A user is always represented from their *current* events (:meth:`LoadedModel.histories`):
read from Neo4j when the model is connected to it (events written after training count
at once), else from the model's snapshot. Products written to Neo4j after training are
ranked too (``rank.new_products``), placed in the embedding space by their brand,
categories, related products and text (:mod:`kgrec.rank.new_products`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from kgrec.config import KgrecConfig
from kgrec.errors import ConfigError, UnknownProductError, UnknownUserError
from kgrec.models.history import Histories
from kgrec.rank.exploration import ExplorationGraph
from kgrec.rank.new_products import embed_new_products
from kgrec.rank.parts import decayed_popularity
from kgrec.rank.ranking import Catalog
from kgrec.rank.retrieval import Retriever
from kgrec.snapshot.idmap import IdMap
from kgrec.snapshot.snapshot import Snapshot, load_snapshot
from kgrec.store.connection import GraphStore
from kgrec.store.reads import read_events, read_new_products, read_user_events
from kgrec.train.artifacts import KgrecRecommender, load_model_dir

MODEL_SNAPSHOT_DIR = "snapshot"

log = logging.getLogger(__name__)


class LoadedModel:
    """A model directory loaded for ranking, with the graph store it reads events from.

    Args:
        config: the run config of the command that ranks. Its ``rank`` section, over the
            model's own rank settings (:func:`~kgrec.config.with_model_rank`), becomes
            :attr:`config`, which the jobs use.
        model_dir: a model directory, its parent (``latest`` is used) or the pointer.
        store: the live graph; None ranks from the model's snapshot alone (no
            real-time events, no explanations).
    """

    def __init__(self, config: KgrecConfig, model_dir: str | Path, store: GraphStore | None = None):
        self.recommender: KgrecRecommender = load_model_dir(model_dir)
        self.config = self.recommender.rank_with(config)
        assert self.recommender.path is not None
        self.model_id = self.recommender.path.name
        self.snapshot: Snapshot = load_snapshot(self.recommender.path / MODEL_SNAPSHOT_DIR)
        self.store = store
        self.loaded_at = time.time()
        self._text_encoder = None
        new_products = self._place_new_products() if store is not None and self.config.rank.new_products else None
        products = self.snapshot.tables.products.select("product_id", "title", "brand", "categories")
        if new_products is not None:
            products = pl.concat([products, new_products.select(products.columns)], how="vertical_relaxed")
        interactions = self.snapshot.tables.interactions
        product_index = torch.from_numpy(self.snapshot.product_ids.indices(interactions.get_column("product_id")).copy())
        timestamp = torch.from_numpy(interactions.get_column("timestamp").to_numpy().copy())
        popularity = decayed_popularity(
            product_index,
            timestamp,
            torch.from_numpy(interactions.get_column("weight").to_numpy().astype("float32")),
            len(self.product_ids),  # new products have no training-time popularity
            now=popularity_anchor(timestamp),
            half_life_days=self.config.rank.popularity_half_life_days,
        )
        self.catalog = Catalog(
            popularity=popularity,
            exploration=ExplorationGraph.from_snapshot(
                self.snapshot, levels=self.config.rank.exploration, extra_products=new_products
            ),
            product_embedding=self.recommender.product_embedding,
        )
        self.retriever = self._build_retriever()
        # Python lists: picking 10 rows out of them costs microseconds, a polars gather ~0.5 ms.
        self.catalog_columns = {
            "product_id": products.get_column("product_id").to_list(),
            "title": products.get_column("title").to_list(),
            "brand": products.get_column("brand").to_list(),
            "category": products.get_column("categories").list.first().to_list(),
        }

    @property
    def product_ids(self) -> IdMap:
        """The products ranked: the model's, then any placed new ones."""
        assert self.recommender.product_ids is not None
        return self.recommender.product_ids

    @property
    def num_products(self) -> int:
        return len(self.product_ids)

    # --- users' current events ----------------------------------------------------------

    def histories(self, user_ids: list[str] | None = None) -> tuple[list[str], Histories]:
        """The users' current histories: ``(user_ids, histories)``, one row per user.

        ``user_ids`` None: every user with events (in the graph, or in the snapshot
        offline). For a list, a user with no trace anywhere raises :class:`UnknownUserError`.
        """
        if self.store is not None and user_ids is not None and len(user_ids) == 1:
            # The served request: one round trip, plain lists (a polars frame costs ~0.3 ms here).
            events = read_user_events(self.store, user_ids[0])
            if events is None:
                raise self.unknown_user(user_ids[0])
            products, timestamps, weights = (list(column) for column in zip(*events)) if events else ([], [], [])
            return user_ids, self.histories_from_events(user_ids, [0] * len(products), products, timestamps, weights)
        if self.store is not None:
            frame = read_events(self.store, user_ids)
        else:
            frame = self.snapshot.tables.interactions.select("user_id", "product_id", "timestamp", "weight")
            if user_ids is not None:
                frame = frame.filter(pl.col("user_id").is_in(user_ids))
        if user_ids is None:
            user_ids = frame.get_column("user_id").unique().sort().to_list()
        else:
            present = set(frame.get_column("user_id").unique().to_list())
            assert self.recommender.user_ids is not None
            for user_id in user_ids:
                if user_id not in present and user_id not in self.recommender.user_ids:
                    raise self.unknown_user(user_id)
        row_of = pl.DataFrame({"user_id": user_ids, "row": range(len(user_ids))}, schema={"user_id": pl.Utf8, "row": pl.Int64})
        frame = frame.join(row_of, on="user_id", how="inner")
        return user_ids, self.histories_from_events(
            user_ids,
            frame.get_column("row").to_numpy(),
            frame.get_column("product_id"),
            frame.get_column("timestamp").fill_null(0).to_numpy(),
            frame.get_column("weight").fill_null(1.0).to_numpy(),
        )

    def histories_from_events(self, user_ids: list[str], rows, product_ids, timestamps, weights) -> Histories:
        """Histories of ``user_ids`` from events given column-wise: ``rows`` (the event's user,
        as a row of ``user_ids``), ``product_ids``, ``timestamps``, ``weights`` (a missing
        timestamp counts as 0, a missing weight as 1). Events on products the model does not
        rank are left out. Lists or arrays: one served user's events never go through a
        polars frame, which would cost about 0.7 ms of CPU a request."""
        product = self.product_ids.indices(product_ids, strict=False)
        keep = product >= 0
        if isinstance(timestamps, list):
            timestamps = [0 if t is None else t for t in timestamps]
            weights = [1.0 if w is None else w for w in weights]
        assert self.recommender.user_ids is not None
        return Histories.from_events(
            torch.as_tensor(np.asarray(rows, dtype=np.int64)[keep]),
            torch.as_tensor(product[keep].astype(np.int64)),
            torch.as_tensor(np.asarray(timestamps, dtype=np.int64)[keep]),
            torch.as_tensor(np.asarray(weights, dtype=np.float32)[keep]),
            len(user_ids),
            user_index=torch.as_tensor(self.recommender.user_ids.indices(user_ids, strict=False).astype(np.int64)),
        )

    def unknown_user(self, user_id: str) -> UnknownUserError:
        where = f"the graph at {self.store.uri}" if self.store is not None else f"model {self.model_id}'s snapshot"
        return UnknownUserError(
            f"User {user_id!r} is not in {where} ({len(self.recommender.user_ids or []):,} users in model "
            f"{self.model_id}). New users need at least one interaction: load their events with "
            "`kgrec build-graph` or `kgrec add-event`."
        )

    def product_index(self, product_id: str) -> int:
        index = self.product_ids.indices([product_id], strict=False)[0]
        if index < 0:
            raise UnknownProductError(
                f"Product {product_id!r} is not in model {self.model_id} ({self.num_products:,} products)."
            )
        return int(index)

    def _build_retriever(self) -> Retriever | None:
        """The candidate stage for a catalog above ``rank.exact_max_products`` (None: score every
        product). Products placed after training are in the index like the others."""
        rank_config = self.config.rank
        if self.num_products <= rank_config.exact_max_products:
            return None
        started = time.perf_counter()
        retriever = Retriever(
            self.recommender.product_embedding, self.catalog.sorted_popularity, rank_config.retrieval_candidates,
            rank_config.retrieval, rank_config.retrieval_probes, rank_config.pca_components,
        )
        log.info(
            "Ranking %d products from retrieved candidates (%s index, built in %.1f s).",
            self.num_products, rank_config.retrieval, time.perf_counter() - started,
        )
        return retriever

    # --- queries ------------------------------------------------------------------------

    def query_scores(self, text: str) -> Tensor:
        """``[P]`` cosine similarity of the query text to every product's text."""
        if not text.strip():
            raise ConfigError("The query is empty. Pass some text, e.g. --query 'waterproof mascara', or leave --query out.")
        product_text = self.recommender.product_text
        if product_text is None:
            raise ConfigError(
                f"Model {self.model_id} was trained without text (model.use_text=false), so it cannot search by query."
            )
        if self._text_encoder is None:
            from kgrec.features.text import load_text_encoder

            self._text_encoder = load_text_encoder(self._features_config())
        query = torch.nn.functional.normalize(self._text_encoder.encode([text])[0].float(), dim=-1)
        return torch.nn.functional.normalize(product_text.float(), dim=-1) @ query

    # --- products added after training ---------------------------------------------------

    def _place_new_products(self) -> pl.DataFrame | None:
        """Place the graph's products that the model lacks; returns their rows (None if none)."""
        assert self.store is not None
        model = self.recommender
        products = read_new_products(self.store, model.product_ids.ids.to_list())  # type: ignore[union-attr]
        if products is None:
            return None
        new_text = None
        if model.product_text is not None:
            from kgrec.features.text import encode_products

            new_text = encode_products(products, self._features_config(), progress=False)
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
        ids = IdMap(pl.concat([model.product_ids.ids, products.get_column("product_id")]), kind="product")  # type: ignore[union-attr]
        self.recommender = model.with_products(ids, embedding, None if new_text is None else new_text[placed])
        log.info("Ranking %d product(s) added after training through their graph neighbours.", products.height)
        return products

    def _features_config(self):
        from kgrec.features.config import FeaturesConfig

        return FeaturesConfig.model_validate(self.recommender.config.get("features", {}))


def popularity_anchor(timestamp: Tensor) -> int:
    """The moment popularity ages are measured from: the latest event, but never later than
    now, so one event stamped in the far future cannot age every other product to 0."""
    now = int(time.time())
    return min(int(timestamp.max()), now) if timestamp.numel() else now


def items(loaded: LoadedModel, ranked: Any) -> list[dict[str, Any]]:
    """The output rows of one user's :class:`~kgrec.rank.engine.RankedList` (``[n]`` tensors)."""
    columns = loaded.catalog_columns
    out = []
    for row in ranked.rows():
        index = row["product_index"]
        out.append(
            {
                "rank": row["rank"],
                **{name: values[index] for name, values in columns.items()},
                "score": round(float(row["score"]), 6),
                "relevance": round(float(row["relevance"]), 6),
                "popularity": round(float(row["popularity"]), 6),
                "diversity": round(float(row["diversity"]), 6),
            }
        )
    return out
