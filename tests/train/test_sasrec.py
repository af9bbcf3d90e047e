"""SASRec on the planted chain shop: it learns what follows what, from the events given."""

from __future__ import annotations

import pytest
import torch

from kgrec.errors import ConfigError, TrainingError
from kgrec.models.history import Histories
from kgrec.snapshot import snapshot_from_tables
from kgrec.train.baselines import BASELINES, fit_and_evaluate, make_baseline
from kgrec.train.evaluate import evaluate
from kgrec.train.sasrec import training_windows
from kgrec.train.split import InteractionSplit, Pairs, leave_last_out
from tests.train.test_loop import planted_tables

FAST = dict(embedding_dim=16, max_length=8, lr=0.01, batch_size=32, epochs=40, eval_every=5, patience=2, dropout=0.1)


@pytest.fixture(scope="module")
def shop():
    snapshot = snapshot_from_tables(planted_tables())
    return snapshot, leave_last_out(snapshot)


@pytest.fixture(scope="module")
def fitted(shop):
    snapshot, split = shop
    return make_baseline("sasrec", **FAST).fit(split, snapshot)


def test_sasrec_is_a_trainable_baseline():
    assert "sasrec" in BASELINES and make_baseline("sasrec").trainable


def test_sasrec_finds_the_planted_next_product(fitted, shop):
    _, split = shop
    test = evaluate(fitted, split.merge_valid_into_train(), "test", ks=(1, 10))
    assert test["hit@1"] > 0.9  # the next product of the chain, first; random hit@1 ≈ 0.02
    assert fitted.best_epoch in fitted.valid_ndcg and fitted.best_valid_ndcg == max(fitted.valid_ndcg.values())


def test_sasrec_ranks_from_the_latest_event_in_order(fitted, shop):
    snapshot, _ = shop
    ids = snapshot.product_ids.ids.to_list()
    p = [ids.index(f"p2{i}") for i in range(5)]
    forward = Histories.from_events(torch.zeros(3), torch.tensor(p[1:4]), torch.tensor([0, 1, 2]), torch.ones(3), 1)
    backward = Histories.from_events(torch.zeros(3), torch.tensor(p[1:4]), torch.tensor([2, 1, 0]), torch.ones(3), 1)
    # The same products in the opposite order: the next product follows the latest one.
    assert int(fitted.score(forward).argmax()) == p[4]
    assert int(fitted.score(backward).argmax()) == p[2]


def test_sasrec_fit_and_evaluate_refits_for_the_chosen_epochs(shop):
    snapshot, split = shop
    result = fit_and_evaluate("sasrec", split, snapshot, ks=(10,), **FAST)
    assert result.epochs == result.model.epochs and result.epochs % FAST["eval_every"] == 0
    assert result.valid_ndcg is not None and result.test["ndcg@10"] > 0.5


def test_training_windows_keep_the_latest_products_of_users_with_two():
    histories = Histories.from_events(
        torch.tensor([0, 0, 0, 1]), torch.tensor([4, 5, 6, 7]), torch.tensor([0, 1, 2, 0]), torch.tensor([1.0, 5.0, 1.0, 1.0]), 2
    )
    index, weight, timestamp = training_windows(histories, length=2)
    assert index.tolist() == [[4, 5, 6]] and weight.tolist() == [[1.0, 5.0, 1.0]]  # user 1 has one product
    assert timestamp is None  # times only on request
    assert training_windows(histories, length=2, times=True)[2].tolist() == [[0, 1, 2]]


def test_sasrec_without_sequences_is_a_clear_error():
    one_each = Pairs.from_indices([0, 1], [0, 1])
    split = InteractionSplit(train=one_each, valid=Pairs.empty(), test=Pairs.empty(), num_users=2, num_products=2)
    with pytest.raises(TrainingError, match="no user has two train products"):
        make_baseline("sasrec").fit(split)


def test_sasrec_rejects_bad_settings():
    with pytest.raises(ConfigError, match="dropout"):
        make_baseline("sasrec", dropout=1.5)
