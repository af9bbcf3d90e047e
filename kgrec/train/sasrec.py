"""SASRec as a baseline: trained and scored through the same split and evaluator as kgrec.

Training follows the SASRec recipe with a full cross-entropy (as in the strong
re-evaluations of SASRec, e.g. Klenitskiy & Vasilev 2023): each user's train sequence
(the latest ``max_length + 1`` products, oldest first) predicts, at every position, the
next product against **all** products. Adam, lr 1e-3, batch 128; valid NDCG@10 every
``eval_every`` epochs picks the epoch count (``patience`` evaluations without a better
one stop training).

A user's vector is the hidden state at the latest of their last ``max_length`` products
(:meth:`SASRecRecommender.user_vectors`), computed from the events given, so a new event
moves the ranking without retraining.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kgrec.errors import ConfigError, TrainingError
from kgrec.models.history import Histories
from kgrec.models.sasrec import SASRec
from kgrec.models.sequence import trim_padding
from kgrec.train.evaluate import evaluate
from kgrec.train.recommender import Recommender, pair_histories

logger = logging.getLogger(__name__)


def training_windows(histories: Histories, length: int, times: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Every user's latest ``length + 1`` products, for next-product training at every position.

    Args:
        times: also return the events' times (for an encoder that reads time gaps).

    Returns:
        ``(index, weight, timestamp)``, each ``[n, length + 1]`` and right-aligned (padding:
        index 0, weight 0, time 0; weights are the raw event weights), only for the ``n``
        users with at least two products: input ``[:, :-1]`` predicts target ``[:, 1:]``.
        ``timestamp`` is None unless ``times``.
    """
    index, weight = histories.latest(length + 1, 1.0)
    keep = histories.lengths >= 2
    timestamp = histories.latest_timestamps(length + 1)[keep] if times else None
    return index[keep], weight[keep], timestamp


class SASRecRecommender(Recommender):
    """SASRec behind the recommender contract.

    Args:
        embedding_dim: item embedding size, shared with the output layer.
        max_length: positions (the latest ``max_length`` products form a user's input).
        num_blocks, num_heads, dropout: the transformer (pre-LN, causal).
        lr: Adam learning rate.
        batch_size: users' sequences per step.
        epochs: most passes over the users.
        eval_every: epochs between valid evaluations.
        patience: evaluations without a better valid NDCG@10 before stopping.
        seed: seeds the initialisation, shuffling and dropout.
        eval_batch_size: users per scoring batch during validation.
    """

    name = "sasrec"
    trainable = True

    def __init__(
        self,
        embedding_dim: int = 64,
        max_length: int = 50,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        lr: float = 1e-3,
        batch_size: int = 128,
        epochs: int = 200,
        eval_every: int = 5,
        patience: int = 10,
        seed: int = 0,
        eval_batch_size: int = 1024,
    ) -> None:
        if min(embedding_dim, max_length, num_blocks, num_heads, batch_size, epochs, eval_every, patience) < 1:
            raise ConfigError(
                "sasrec: embedding_dim, max_length, num_blocks, num_heads, batch_size, epochs, eval_every and "
                f"patience must be ≥ 1; found {embedding_dim}, {max_length}, {num_blocks}, {num_heads}, "
                f"{batch_size}, {epochs}, {eval_every}, {patience}."
            )
        if lr <= 0 or not 0 <= dropout < 1:
            raise ConfigError(f"sasrec: lr must be > 0 and dropout in [0, 1); found lr={lr}, dropout={dropout}.")
        self.embedding_dim, self.max_length = embedding_dim, max_length
        self.num_blocks, self.num_heads, self.dropout = num_blocks, num_heads, dropout
        self.lr, self.batch_size, self.epochs = lr, batch_size, epochs
        self.eval_every, self.patience, self.seed = eval_every, patience, seed
        self.eval_batch_size = eval_batch_size
        self.model: SASRec | None = None
        self.device = torch.device("cpu")
        self.valid_ndcg: dict[int, float] = {}
        self.best_epoch = 0
        self.best_valid_ndcg: float | None = None
        self.seconds = 0.0

    # --- the contract ---------------------------------------------------------------

    def fit(self, split: Any, snapshot: Any = None, device: str = "cpu") -> SASRecRecommender:
        """Train on ``split.train``; early stopping on valid NDCG@10 when the split has valid pairs."""
        started = time.perf_counter()
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.device = torch.device(device)
        index, weight, _ = training_windows(pair_histories(split.train, split.num_users), self.max_length)
        if index.shape[0] == 0:
            raise TrainingError(
                f"sasrec: no user has two train products ({len(split.train):,} train pairs); "
                "it learns from what follows what. Add more interactions per user."
            )
        self.model = SASRec(
            split.num_products, self.embedding_dim, self.max_length, self.num_blocks, self.num_heads, self.dropout
        ).to(self.device)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr, betas=(0.9, 0.98))
        early_stopping = len(split.valid) > 0
        best_state: dict[str, Tensor] | None = None
        self.valid_ndcg, self.best_epoch, self.best_valid_ndcg = {}, 0, None
        stale = 0
        for epoch in range(1, self.epochs + 1):
            self.model.train()
            total, count = 0.0, 0
            for batch in torch.randperm(index.shape[0], generator=generator).split(self.batch_size):
                loss, n = self._loss(index[batch].to(self.device), weight[batch].to(self.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + float(loss.detach()) * n, count + n
            if not torch.isfinite(torch.tensor(total)):
                raise TrainingError(f"sasrec diverged at epoch {epoch} (loss is not finite); lower lr (now {self.lr}).")
            if not early_stopping or epoch % self.eval_every:
                continue
            ndcg = evaluate(self, split, "valid", ks=(10,), batch_size=self.eval_batch_size)["ndcg@10"]
            self.valid_ndcg[epoch] = ndcg
            logger.info("sasrec epoch %d: loss %.4f, valid ndcg@10 %.4f", epoch, total / max(count, 1), ndcg)
            if self.best_valid_ndcg is None or ndcg > self.best_valid_ndcg:
                self.best_valid_ndcg, self.best_epoch, stale = ndcg, epoch, 0
                best_state = copy.deepcopy(self.model.state_dict())
            else:
                stale += 1
                if stale >= self.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        else:
            self.best_epoch = self.epochs
        self.model.eval()
        self.seconds = time.perf_counter() - started
        return self

    @property
    def product_embedding(self) -> Tensor | None:
        return None if self.model is None else self.model.product_embedding.detach()

    @torch.no_grad()
    def user_vectors(self, histories: Histories) -> Tensor:
        """``[b, dim]``: the hidden state at each user's latest product (of their last ``max_length``).

        A user without events gets the state of an empty window (the same for all of them)."""
        self._check_fitted("model")
        assert self.model is not None
        self.model.eval()
        index, weight = histories.latest(self.max_length, 1.0)
        present, index = trim_padding(weight > 0, index)
        hidden = self.model(index.to(self.device), present.to(self.device))
        return hidden[:, -1]

    # --- training -------------------------------------------------------------------

    def _loss(self, index: Tensor, weight: Tensor) -> tuple[Tensor, int]:
        """Mean cross-entropy over all products at every position whose input and target are events."""
        assert self.model is not None
        present, index = trim_padding(weight > 0, index)
        inputs, input_present = index[:, :-1], present[:, :-1]
        hidden = self.model(inputs, input_present)
        # A position with an input event always has a target event after it (right alignment).
        positions = input_present & present[:, 1:]
        logits = hidden[positions] @ self.model.product_embedding.T  # [n, P]
        targets = index[:, 1:][positions]
        return F.cross_entropy(logits, targets), int(targets.numel())
