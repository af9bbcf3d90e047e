"""One contract, run on every recommender: kgrec and each baseline.

The data is the planted chain shop of ``test_loop``: every user walks one of 6 chains
of 10 products in order, so a model that learns anything ranks the held-out next
product far above a random ranking (NDCG@10 ≈ 0.1 at random).
"""

from __future__ import annotations

import pytest
import torch

from kgrec.config import KgrecConfig
from kgrec.errors import TrainingError
from kgrec.models.config import ModelConfig
from kgrec.models.history import Histories
from kgrec.snapshot import snapshot_from_tables
from kgrec.train.artifacts import KgrecRecommender
from kgrec.train.baselines import make_baseline
from kgrec.train.config import TrainConfig
from kgrec.train.evaluate import evaluate
from kgrec.train.recommender import Recommender, pair_histories
from kgrec.train.split import leave_last_out
from tests.train.test_loop import planted_tables


@pytest.fixture(scope="module")
def shop():
    snapshot = snapshot_from_tables(planted_tables())
    return snapshot, leave_last_out(snapshot)


class RecommenderContract:
    """Mixed into one test class per recommender; ``make`` builds an unfitted one."""

    follows_events = False  # does a user's score move with events after training?
    min_ndcg = 0.3  # on the planted chains; random is about 0.1

    def make(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, shop):
        snapshot, split = shop
        model = cls().make()
        assert model.fit(split, snapshot) is model
        return model

    def histories(self, split, users):
        return pair_histories(split.train, split.num_users).select(torch.tensor(users))

    def test_contract_scoring_before_fit_is_a_clear_error(self, shop):
        _, split = shop
        with pytest.raises(TrainingError, match="not fitted"):
            self.make().score(self.histories(split, [0]))

    def test_contract_scores_every_product_for_each_user(self, fitted, shop):
        _, split = shop
        scores = fitted.score(self.histories(split, [0, 7, 119]))
        assert scores.shape == (3, split.num_products) and scores.dtype.is_floating_point
        assert torch.isfinite(scores).all()
        assert torch.equal(scores, fitted.score(self.histories(split, [0, 7, 119])))  # no hidden state

    def test_contract_product_space_matches_the_catalog(self, fitted, shop):
        _, split = shop
        embedding = fitted.product_embedding
        assert embedding is None or embedding.shape[0] == split.num_products

    def test_contract_learns_the_planted_chains(self, fitted, shop):
        _, split = shop
        assert evaluate(fitted, split.merge_valid_into_train(), "test", ks=(10,))["ndcg@10"] >= self.min_ndcg

    def test_contract_a_new_event_moves_the_user_when_the_model_follows_events(self, fitted, shop):
        _, split = shop
        before = self.histories(split, [0])
        latest = int(before.product_index[-1])
        other = (latest + 35) % split.num_products  # another chain
        after = Histories.from_events(
            torch.zeros(before.product_index.numel() + 1, dtype=torch.long),
            torch.cat([before.product_index, torch.tensor([other])]),
            torch.arange(before.product_index.numel() + 1),
            torch.ones(before.product_index.numel() + 1),
            1,
            user_index=before.user_index,
        )
        moved = not torch.allclose(fitted.score(before), fitted.score(after))
        assert moved == self.follows_events


class VectorSpaceContract(RecommenderContract):
    """For the models that score a user vector against every product vector."""

    def test_vector_scores_follow_the_product_table(self, fitted, shop):
        _, split = shop
        histories = self.histories(split, [0, 7])
        table = fitted.product_embedding
        before = fitted.score(histories)
        assert torch.allclose(before, fitted.user_vectors(histories) @ table.T, atol=1e-5)
        # A product neither user has seen: its vector does not feed their user vectors.
        unseen = min(set(range(split.num_products)) - set(histories.product_index.tolist()))
        with torch.no_grad():
            table[unseen].mul_(-1.0)  # changed in place: the scan's copy of the table must not keep the old row
            try:
                after = fitted.score(histories)
            finally:
                table[unseen].mul_(-1.0)
        assert torch.allclose(after[:, unseen], -before[:, unseen], atol=1e-6)
        others = torch.arange(split.num_products) != unseen
        assert torch.allclose(after[:, others], before[:, others], atol=1e-6)
        assert torch.allclose(fitted.score(histories), before, atol=1e-6)


class TestPopularity(RecommenderContract):
    min_ndcg = 0.0  # the same list for everyone: no personal signal to learn

    def make(self):
        return make_baseline("pop")


class TestItemKNN(RecommenderContract):
    follows_events = True

    def make(self):
        return make_baseline("itemknn")


class TestBPR(VectorSpaceContract):
    def make(self):
        return make_baseline("bpr", lr=0.05, batch_size=64, epochs=30, eval_every=5, patience=3)


class TestLightGCN(VectorSpaceContract):
    def make(self):
        return make_baseline("lightgcn", lr=0.05, batch_size=64, epochs=30, eval_every=5, patience=3)


def mean_encoder_kgrec(co_interaction_neighbours: int) -> KgrecRecommender:
    """A small kgrec with the mean user encoder, with co-interactions (the default weight) or without (0)."""
    config = KgrecConfig(
        model=ModelConfig(dim=16, layers=1, use_text=False, user_encoder="mean", history_length=3, recency_decay=0.3,
                          co_interaction_neighbours=co_interaction_neighbours),
        train=TrainConfig(epochs=40, batch_size=256, lr=0.02, patience=3, device="cpu"),
    )
    return KgrecRecommender(config, seed=0)


class TestKgrec(VectorSpaceContract):
    """The cosine alone (no co-interactions: ``model.co_interaction_neighbours: 0``): a vector space."""

    follows_events = True

    def make(self):
        return mean_encoder_kgrec(co_interaction_neighbours=0)


class TestKgrecIdUsers(TestKgrec):
    """``model.user_mode: id``: the trained user vector; events only change exclusions."""

    follows_events = False

    def make(self):
        config = KgrecConfig(
            model=ModelConfig(dim=16, layers=1, use_text=False, user_mode="id", co_interaction_neighbours=0),
            train=TrainConfig(epochs=40, batch_size=256, lr=0.02, patience=3, device="cpu"),
        )
        return KgrecRecommender(config, seed=0)


class TestKgrecCoInteractions(RecommenderContract):
    """The default score: the cosine plus the co-interaction paths of the user's current products."""

    follows_events = True

    def make(self):
        return mean_encoder_kgrec(co_interaction_neighbours=ModelConfig().co_interaction_neighbours)


class TestSASRec(VectorSpaceContract):
    follows_events = True  # the user is encoded from the events given

    def make(self):
        return make_baseline("sasrec", embedding_dim=16, max_length=8, lr=0.01, batch_size=32, epochs=30,
                             eval_every=5, patience=2, dropout=0.1)


class TestKgrecTransformer(TestKgrec):
    """``model.user_encoder: transformer``: a causal transformer over the latest events."""

    def make(self):
        config = KgrecConfig(
            model=ModelConfig(dim=16, layers=1, use_text=False, user_encoder="transformer", sequence_length=8,
                              encoder_dropout=0.1, co_interaction_neighbours=0),
            train=TrainConfig(epochs=30, sequence_batch_size=32, lr=0.01, patience=2, device="cpu"),
        )
        return KgrecRecommender(config, seed=0)


class TestKgrecTimeGaps(TestKgrec):
    """The transformer user encoder with ``model.time_gaps``: it also reads when each event happened."""

    def make(self):
        config = KgrecConfig(
            model=ModelConfig(dim=16, layers=1, use_text=False, user_encoder="transformer", sequence_length=8,
                              encoder_dropout=0.1, time_gaps=True, co_interaction_neighbours=0),
            train=TrainConfig(epochs=30, sequence_batch_size=32, lr=0.01, patience=2, device="cpu"),
        )
        return KgrecRecommender(config, seed=0)


class TestKgrecGatedEncoder(TestKgrec):
    """The transformer user encoder with ``model.encoder_block: gated``."""

    def make(self):
        config = KgrecConfig(
            model=ModelConfig(dim=16, layers=1, use_text=False, user_encoder="transformer", sequence_length=8,
                              encoder_dropout=0.1, encoder_block="gated", co_interaction_neighbours=0),
            train=TrainConfig(epochs=30, sequence_batch_size=32, lr=0.01, patience=2, device="cpu"),
        )
        return KgrecRecommender(config, seed=0)
