"""Training kgrec on a tiny planted shop: it learns, stops early, and checks its device."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from kgrec.errors import TrainingError
from kgrec.features.config import FeaturesConfig
from kgrec.ingest.tables import GraphTables
from kgrec.models.config import ModelConfig
from kgrec.snapshot import snapshot_from_tables
from kgrec.train.config import TrainConfig
from kgrec.train.evaluate import evaluate
from kgrec.config import KgrecConfig
from kgrec.train.artifacts import KgrecRecommender
from kgrec.train.loop import next_item_pairs, resolve_device
from kgrec.train.split import Pairs, leave_last_out

NUM_CHAINS, CHAIN_LENGTH = 6, 10


def planted_tables(num_users: int = 120, seed: int = 0) -> GraphTables:
    """60 products in 6 chains (one brand each); every user walks a chain in order.

    The next product is always the one after the last, so a model that learns
    transitions ranks the held-out product first; random ranking gets NDCG@10 ≈ 0.1.
    """
    gen = torch.Generator().manual_seed(seed)
    products = [f"p{c}{i}" for c in range(NUM_CHAINS) for i in range(CHAIN_LENGTH)]
    rows = []
    for u in range(num_users):
        chain = int(torch.randint(NUM_CHAINS, (1,), generator=gen))
        start = int(torch.randint(CHAIN_LENGTH, (1,), generator=gen))
        length = int(torch.randint(5, 8, (1,), generator=gen))
        for step in range(length):
            rows.append((f"u{u:03d}", f"p{chain}{(start + step) % CHAIN_LENGTH}", step))
    interactions = pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "event": ["purchase"] * len(rows),
            "timestamp": [r[2] for r in rows],
            "value": [None] * len(rows),
            "weight": [1.0] * len(rows),
        },
        schema={"user_id": pl.Utf8, "product_id": pl.Utf8, "event": pl.Utf8, "timestamp": pl.Int64,
                "value": pl.Float64, "weight": pl.Float64},
    )
    product_frame = pl.DataFrame(
        {
            "product_id": products,
            "title": [f"item {p}" for p in products],
            "description": [None] * len(products),
            "price": [None] * len(products),
            "brand": [f"brand{p[1]}" for p in products],
            "categories": [[f"Chain {p[1]}"] for p in products],
        },
        schema={"product_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "price": pl.Float64,
                "brand": pl.Utf8, "categories": pl.List(pl.Utf8)},
    )
    users = interactions.select("user_id").unique().sort("user_id")
    return GraphTables(products=product_frame, interactions=interactions, users=users)


@pytest.fixture(scope="module")
def planted():
    snapshot = snapshot_from_tables(planted_tables())
    return snapshot, leave_last_out(snapshot)


FAST_MODEL = ModelConfig(dim=16, layers=1, use_text=False, user_encoder="mean", history_length=3, recency_decay=0.3)


def fit(snapshot, split, model_cfg, train_cfg, features=None, seed=0, epochs=None) -> KgrecRecommender:
    config = KgrecConfig(model=model_cfg, train=train_cfg, features=features or FeaturesConfig())
    return KgrecRecommender(config, seed=seed, epochs=epochs).fit(split, snapshot)


def test_train_model_beats_random_and_stops_early(planted):
    snapshot, split = planted
    cfg = TrainConfig(epochs=200, batch_size=256, lr=0.02, patience=2, device="cpu")
    result = fit(snapshot, split, FAST_MODEL, cfg)
    records = result.history["epochs"]
    assert len(records) < 200  # early stopping kicked in
    assert result.best_epoch == max((r for r in records if r["valid_ndcg"] is not None), key=lambda r: r["valid_ndcg"])["epoch"]
    test = evaluate(result, split, "test", ks=(10,))
    random = evaluate(lambda u: torch.rand(u.numel(), split.num_products, generator=torch.Generator().manual_seed(0)),
                      split, "test", ks=(10,))
    assert test["ndcg@10"] > 0.5
    assert test["ndcg@10"] > 3 * random["ndcg@10"]
    assert result.user_embedding.shape == (snapshot.num_users, 16)
    assert result.product_embedding.shape == (snapshot.num_products, 16)


def test_train_model_is_deterministic_for_a_seed(planted):
    snapshot, split = planted
    cfg = TrainConfig(epochs=2, batch_size=256, device="cpu")
    a = fit(snapshot, split, FAST_MODEL, cfg, seed=3)
    b = fit(snapshot, split, FAST_MODEL, cfg, seed=3)
    assert torch.equal(a.product_embedding, b.product_embedding)


def test_train_model_fixed_epochs_without_valid(planted):
    snapshot, split = planted
    merged = split.merge_valid_into_train()
    cfg = TrainConfig(epochs=50, batch_size=256, device="cpu", loss="bpr")
    result = fit(snapshot, merged, FAST_MODEL, cfg, epochs=3)
    assert [r["epoch"] for r in result.history["epochs"]] == [1, 2, 3]
    assert all(r["valid_ndcg"] is None for r in result.history["epochs"])
    assert result.best_epoch == 3


@pytest.mark.parametrize("sampled", [False, True])
def test_lr_decay_shrinks_every_later_epochs_steps(planted, sampled):
    """With a decay near zero, epochs after the first barely move any weight; without one they do."""
    snapshot, split = planted
    merged = split.merge_valid_into_train()
    model_cfg = ModelConfig(dim=16, layers=1, use_text=False, user_encoder="transformer", sequence_length=8)
    extra = {"full_softmax_max_products": 10, "negatives": 5} if sampled else {}

    def products(epochs: int, lr_decay: float) -> torch.Tensor:
        cfg = TrainConfig(sequence_batch_size=32, lr=0.01, lr_decay=lr_decay, device="cpu", **extra)
        return fit(snapshot, merged, model_cfg, cfg, seed=1, epochs=epochs).product_embedding

    one = products(1, 1.0)
    assert torch.allclose(products(3, 1e-9), one, atol=1e-5)
    assert not torch.allclose(products(3, 1.0), one, atol=1e-2)


def test_train_model_cuda_without_gpu_raises(planted, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    snapshot, split = planted
    with pytest.raises(TrainingError, match="no CUDA GPU is visible"):
        fit(snapshot, split, FAST_MODEL, TrainConfig(device="cuda"))
    assert resolve_device("auto").type == "cpu"


def test_next_item_pairs_history_precedes_target():
    train = Pairs(
        user_index=torch.tensor([0, 0, 0, 1, 1]),
        product_index=torch.tensor([5, 6, 7, 8, 9]),
        weight=torch.ones(5),
        timestamp=torch.tensor([0, 1, 2, 0, 1]),
    )
    users, hist, weight, target = next_item_pairs(train, history_length=2, decay=0.5)
    assert users.tolist() == [0, 0, 1]
    assert target.tolist() == [6, 7, 9]
    assert hist.tolist() == [[0, 5], [5, 6], [0, 8]]
    assert weight.tolist() == [[0.0, 1.0], [0.5, 1.0], [0.0, 1.0]]


def test_train_model_with_text_uses_the_encoder(planted, tmp_path, monkeypatch):
    import kgrec.features.text as text

    class FakeEncoder:
        model_id = "fake"

        def encode(self, texts, progress=False):
            return torch.nn.functional.normalize(torch.randn(len(texts), 12), dim=-1)

    monkeypatch.setattr(text, "load_text_encoder", lambda config: FakeEncoder())
    monkeypatch.setattr(text, "resolve_text_model", lambda name: (tmp_path, "fake"))
    snapshot, split = planted
    model_cfg = ModelConfig(dim=8, layers=1, history_length=3)
    result = fit(snapshot, split, model_cfg, TrainConfig(epochs=1, device="cpu"), FeaturesConfig(cache_dir=str(tmp_path)))
    assert result.product_text is not None and result.product_text.shape == (snapshot.num_products, 12)


def test_sampled_softmax_with_log_q_approximates_the_full_softmax():
    from kgrec.models.kgrec_model import softmax_loss
    from kgrec.train.loop import NegativeProposal, sampled_softmax_loss

    gen = torch.Generator().manual_seed(0)
    users, products = torch.randn(64, 8, generator=gen), torch.randn(40, 8, generator=gen)
    target = torch.randint(40, (64,), generator=gen)
    popularity = torch.arange(40).float() ** 2  # heavily skewed proposal
    full = softmax_loss(users, products, target, temperature=0.5)
    negatives, log_q = NegativeProposal(popularity).draw(200_000, gen)
    sampled = sampled_softmax_loss(users, products, target, 0.5, negatives, log_q)
    assert abs(float(sampled) - float(full)) < 0.05 * float(full)


def test_transformer_training_learns_the_planted_chains(planted):
    snapshot, split = planted
    model_cfg = ModelConfig(dim=16, layers=1, use_text=False, user_encoder="transformer", sequence_length=8,
                            encoder_dropout=0.1)
    # A catalog "larger" than full_softmax_max_products trains on sampled negatives.
    cfg = TrainConfig(epochs=30, sequence_batch_size=32, lr=0.01, patience=2, device="cpu",
                      full_softmax_max_products=10, negatives=30)
    result = fit(snapshot, split, model_cfg, cfg)
    assert evaluate(result, split, "test", ks=(10,))["ndcg@10"] > 0.5
    assert result.user_encoder is not None


def test_transformer_encoder_applies_to_history_mode_only():
    assert ModelConfig(user_encoder="transformer").sequence_encoder
    assert not ModelConfig(user_encoder="transformer", user_mode="id").sequence_encoder
    assert not ModelConfig(user_encoder="mean").sequence_encoder


@pytest.mark.parametrize("sampled", [False, True])
def test_cached_and_full_propagation_both_learn_the_chains(planted, sampled):
    """Cached propagation (the default) learns as well as propagating the whole graph at every step."""
    snapshot, split = planted
    model_cfg = ModelConfig(dim=16, layers=2, use_text=False, user_encoder="transformer", sequence_length=8,
                            encoder_dropout=0.1)
    extra = {"full_softmax_max_products": 10, "negatives": 30} if sampled else {}
    scores = {}
    for propagation in ("cached", "full"):
        cfg = TrainConfig(epochs=12, sequence_batch_size=32, lr=0.01, device="cpu", propagation=propagation, **extra)
        scores[propagation] = evaluate(fit(snapshot, split, model_cfg, cfg, epochs=12), split, "test", ks=(10,))["ndcg@10"]
    assert scores["cached"] > 0.5
    assert scores["cached"] > scores["full"] - 0.1


def test_evaluate_scores_a_fixed_sample_of_users(planted):
    snapshot, split = planted
    scorer = lambda u: torch.rand(u.numel(), split.num_products, generator=torch.Generator().manual_seed(int(u.sum())))
    everyone = evaluate(scorer, split, "test", ks=(10,))
    a = evaluate(scorer, split, "test", ks=(10,), max_users=50)
    b = evaluate(scorer, split, "test", ks=(10,), max_users=50)
    assert a["users"] == 50 and a["sampled_from"] == everyone["users"] > 50
    assert a == b  # the same users each time
    assert "sampled_from" not in everyone


def test_negative_proposal_draws_follow_popularity_plus_one():
    from kgrec.train.loop import NegativeProposal

    popularity = torch.tensor([0, 1, 3, 7, 0, 20])
    for unseen in (True, False):
        proposal = NegativeProposal(popularity, unseen=unseen)
        weight = (popularity + 1).double() if unseen else torch.where(popularity > 0, popularity + 1, 0).double()
        expected = weight / weight.sum()
        negatives, log_q = proposal.draw(200_000, torch.Generator().manual_seed(0))
        share = torch.bincount(negatives, minlength=6).double() / negatives.numel()
        assert torch.allclose(share, expected, atol=0.005)
        assert torch.allclose(log_q, torch.log(expected[negatives] * 200_000).float(), atol=1e-4)
        assert ((negatives == 0) | (negatives == 4)).any() == unseen  # unseen=False: never a product nobody bought


def test_sampled_training_gives_the_id_tables_row_sparse_gradients(planted):
    """On a large catalog's path a step's ID-table gradient is row-sparse, equal to the dense
    one, and RowAdam moves only the rows the step gathered."""
    from kgrec.train.loop import NegativeProposal, Optimizer, Texts, _sequence_loss, build_model, uses_sampled_rows
    from kgrec.train.sasrec import training_windows
    from kgrec.models.history import Histories

    snapshot, split = planted
    model_cfg = ModelConfig(dim=16, layers=2, use_text=False, user_encoder="transformer", sequence_length=8,
                            encoder_dropout=0.0)
    cfg = TrainConfig(device="cpu", full_softmax_max_products=10, negatives=5)
    train = split.train
    index, weight, _ = training_windows(
        Histories.from_events(train.user_index, train.product_index, train.timestamp, train.weight, snapshot.num_users), 8
    )
    proposal = NegativeProposal(torch.bincount(train.product_index, minlength=snapshot.num_products))
    grads = {}
    for sparse in (False, True):
        torch.manual_seed(0)
        model = build_model(snapshot, train, model_cfg, Texts())
        model.cache_propagation(live_neighbours=1)  # the capped neighbourhood of large catalogs
        assert uses_sampled_rows(model, cfg, cached=True)
        optimizer = Optimizer(model, cfg, sparse=sparse)
        before = model.embedding["product"].weight.detach().clone()
        loss = _sequence_loss(model, index[:4], weight[:4], None, cfg, proposal, torch.Generator().manual_seed(1),
                              torch.device("cpu"), cached=True)
        optimizer.zero_grad()
        loss.backward()
        grad = model.embedding["product"].weight.grad
        assert grad.is_sparse == sparse
        grads[sparse] = grad.to_dense()
        optimizer.step()
        moved = (model.embedding["product"].weight.detach() != before).any(dim=1)
    touched = torch.zeros(snapshot.num_products, dtype=torch.bool)
    touched[grad.coalesce().indices()[0]] = True
    assert torch.allclose(grads[True], grads[False], atol=1e-6)
    assert moved.any() and not (moved & ~touched).any()  # only gathered rows move
    assert touched.sum() < snapshot.num_products  # a few chains' products, not the catalog


def test_optimizer_keeps_dense_adam_with_weight_decay(planted):
    from kgrec.train.loop import Optimizer, Texts, build_model

    snapshot, split = planted
    model = build_model(snapshot, split.train, ModelConfig(dim=16, layers=1, use_text=False), Texts())
    optimizer = Optimizer(model, TrainConfig(device="cpu", weight_decay=1e-4), sparse=True)
    assert [type(o).__name__ for o in optimizer.optimizers] == ["Adam"]


def test_row_adam_equals_adam_on_rows_that_get_gradients():
    """Where every row gets a gradient at every step, the row-wise update is Adam's, and
    repeated rows in a sparse gradient are summed first."""
    from kgrec.train.loop import RowAdam

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(5, 3, generator=gen)
    sparse_table, dense_table = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    row_adam, adam = RowAdam([sparse_table], lr=0.01), torch.optim.Adam([dense_table], lr=0.01)
    for _ in range(3):
        rows = torch.tensor([0, 1, 2, 3, 4, 2, 0])  # every row, two of them twice
        values = torch.randn(rows.numel(), 3, generator=gen)
        sparse_table.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), values, (5, 3))
        dense_table.grad = torch.zeros(5, 3).index_add(0, rows, values)
        row_adam.step()
        adam.step()
    assert torch.allclose(sparse_table, dense_table, atol=1e-6)
    assert not torch.allclose(sparse_table, start)


def test_full_softmax_leaves_products_without_interactions_out_of_the_negatives():
    from kgrec.models.kgrec_model import softmax_loss

    gen = torch.Generator().manual_seed(0)
    users, products = torch.randn(8, 4, generator=gen), torch.randn(6, 4, generator=gen)
    target = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    allowed = torch.tensor([True, True, True, True, False, False])
    masked = softmax_loss(users, products, target, 0.5, candidates=allowed)
    assert torch.allclose(masked, softmax_loss(users, products[:4], target, 0.5))  # as if 4 and 5 did not exist
    products.requires_grad_(True)
    softmax_loss(users, products, target, 0.5, candidates=allowed).backward()
    assert products.grad[4:].abs().sum() == 0  # nothing pushes them away from the users


@pytest.mark.parametrize("sampled", [False, True])
def test_products_without_training_events_are_never_negatives_when_unseen_negatives_is_off(planted, monkeypatch, sampled):
    """``train.unseen_negatives: false`` (the default): neither softmax path pushes a product nobody
    interacted with (its vector gets no gradient); with ``true`` it is a negative like any other."""
    import kgrec.train.loop as loop
    from kgrec.models.history import Histories
    from kgrec.train.sasrec import training_windows
    from kgrec.train.split import Pairs

    snapshot, split = planted
    loner = int(torch.bincount(split.train.product_index).argmax())  # has KG neighbours, so a non-zero vector
    keep = split.train.product_index != loner
    t = split.train
    train = Pairs(t.user_index[keep], t.product_index[keep], t.weight[keep], t.timestamp[keep])
    model_cfg = ModelConfig(dim=16, layers=1, use_text=False, user_encoder="transformer", sequence_length=8)
    extra = {"full_softmax_max_products": 10, "negatives": 2_000} if sampled else {}
    index, weight, _ = training_windows(
        Histories.from_events(train.user_index, train.product_index, train.timestamp, train.weight, snapshot.num_users), 8
    )
    popularity = torch.bincount(train.product_index, minlength=snapshot.num_products)
    assert popularity[loner] == 0
    pushed = {}
    for unseen in (True, False):
        torch.manual_seed(0)
        model = loop.build_model(snapshot, train, model_cfg, loop.Texts())
        vectors = model.propagate()["product"].detach().requires_grad_()
        monkeypatch.setattr(loop, "_product_vectors", lambda m, c, rows=None: vectors if rows is None else vectors[rows])
        cfg = TrainConfig(device="cpu", unseen_negatives=unseen, **extra)
        loss = loop._sequence_loss(model, index, weight, None, cfg, loop.NegativeProposal(popularity, unseen=unseen),
                                   torch.Generator().manual_seed(1), torch.device("cpu"), cached=False)
        loss.backward()
        assert vectors.grad[popularity > 0].abs().sum() > 0
        pushed[unseen] = float(vectors.grad[loner].abs().sum())
    assert pushed[True] > 0
    assert pushed[False] == 0
