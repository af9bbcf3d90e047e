"""Training of :class:`~kgrec.models.kgrec_model.KgrecModel` on one snapshot and split.

Training examples are next-product pairs: for every user and every train product
after their first, the history is the products before it (the latest
``model.history_length``, recency-weighted) and the target is the product itself.
That is exactly the leave-last-out task, and the same rule ranks users at serving time.

Each step computes the product vectors it needs, builds the batch's user vectors from
their histories and applies the softmax (or BPR) loss. With ``train.propagation:
cached`` (the default) a step pays only for its products: the text terms are propagated
once, the one-hop terms live, the deeper ones refreshed every epoch
(:meth:`~kgrec.models.kgrec_model.KgrecModel.cache_propagation`), so a step does not
propagate the graph; ``full`` propagates the whole graph at every step. The valid
NDCG@10 of :func:`kgrec.train.evaluate.evaluate` drives early stopping; the best
epoch's weights are kept.
"""

from __future__ import annotations

import copy
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgrec.errors import TrainingError
from kgrec.features.config import FeaturesConfig
from kgrec.models.config import ModelConfig
from kgrec.models.hetero_graph import graph_from_snapshot
from kgrec.models.history import Histories
from kgrec.models.kgrec_model import LIVE_NEIGHBOURS, KgrecModel, bpr_loss, softmax_loss
from kgrec.models.sequence import trim_padding
from kgrec.snapshot.snapshot import Snapshot
from kgrec.train.config import TrainConfig
from kgrec.train.evaluate import evaluate
from kgrec.train.sasrec import training_windows
from kgrec.train.split import InteractionSplit, NegativeSampler, Pairs

VALID_METRIC = "ndcg@10"


@dataclass
class EpochRecord:
    """One epoch: mean training loss, valid NDCG@10 (None when not evaluated), seconds."""

    epoch: int
    loss: float
    valid_ndcg: float | None
    seconds: float


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when visible, else CPU; ``cuda`` without a GPU → :class:`TrainingError`."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda but no CUDA GPU is visible; use --device auto or cpu")
        return torch.device("cuda")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    raise TrainingError(f"Unknown device {device!r}; expected one of ['auto', 'cpu', 'cuda'].")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def next_item_pairs(train: Pairs, history_length: int, decay: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every (history → next product) example of the train pairs.

    ``train`` is sorted by ``(user_index, timestamp, product_index)`` (as
    :class:`~kgrec.train.split.Pairs` guarantees).

    Returns:
        ``(user_index [P], history_index [P, L], history_weight [P, L], target [P])``;
        one example per train pair that has at least one earlier pair of its user.
    """
    user, product, weight = train.user_index, train.product_index, train.weight
    n = user.numel()
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, torch.zeros(0, history_length, dtype=torch.long), torch.zeros(0, history_length), empty
    counts = torch.bincount(user)
    start = (torch.cumsum(counts, 0) - counts)[user]
    keep = torch.arange(n) - start >= 1
    rows = torch.arange(n)[keep]
    back = torch.arange(history_length, 0, -1)  # L .. 1 steps before the target
    hist = rows.view(-1, 1) - back.view(1, -1)  # [P, L], chronological
    present = hist >= start[keep].view(-1, 1)
    hist = hist.clamp(min=0)
    history_index = product[hist] * present
    history_weight = (decay ** (back - 1).float()).view(1, -1) * weight[hist] * present
    return user[keep], history_index, history_weight, product[keep]


@dataclass
class Texts:
    """Text embeddings a model is built with: ``[P, d]`` products, ``[B, d]`` brand and
    ``[C, d]`` category names (None when off or absent)."""

    product: Tensor | None = None
    brand: Tensor | None = None
    category: Tensor | None = None


def encode_texts(snapshot: Snapshot, model_cfg: ModelConfig, features_cfg: FeaturesConfig, progress: bool = False) -> Texts:
    """The text embeddings ``model_cfg`` asks for (none without ``use_text``; names only with ``use_kg``)."""
    texts = Texts()
    if model_cfg.use_text:
        from kgrec.features.text import encode_names, encode_products

        texts.product = encode_products(snapshot.tables.products, features_cfg, progress=progress)
        if model_cfg.use_kg:
            if len(snapshot.brand_ids):
                texts.brand = encode_names(snapshot.brand_ids.ids.to_list(), features_cfg, progress=progress)
            if len(snapshot.category_ids):
                texts.category = encode_names(snapshot.category_ids.ids.to_list(), features_cfg, progress=progress)
    return texts


def build_model(
    snapshot: Snapshot, train: Pairs, model_cfg: ModelConfig, texts: Texts, event_weight: Tensor | None = None
) -> KgrecModel:
    """The untrained model over ``train``'s edges.

    ``event_weight``: ``[E]`` weight of each event type, for the transformer user encoder."""
    graph = graph_from_snapshot(
        snapshot,
        train.user_index,
        train.product_index,
        train.weight,
        use_kg=model_cfg.use_kg,
        use_user_nodes=model_cfg.use_user_nodes,
        relation_weight=model_cfg.relation_weight,
    )
    has_id = torch.bincount(train.product_index, minlength=snapshot.num_products) > 0
    model = KgrecModel(
        graph, model_cfg, texts.product, texts.brand, texts.category, product_has_id=has_id, event_weight=event_weight
    )
    histories = Histories.from_events(
        train.user_index, train.product_index, train.timestamp, train.weight, snapshot.num_users
    )
    model.set_histories(histories)
    return model


def train_model(
    snapshot: Snapshot,
    split: InteractionSplit,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    features_cfg: FeaturesConfig,
    seed: int = 42,
    progress: bool = True,
    epochs: int | None = None,
    event_weight: Tensor | None = None,
    label: str = "train",
) -> tuple[KgrecModel, Tensor | None, dict[str, Any]]:
    """Train kgrec on ``split.train`` (the graph sees train edges only).

    :meth:`kgrec.train.artifacts.KgrecRecommender.fit` calls this; use that.

    Args:
        snapshot: the graph (products, brands, categories, relations, id maps).
        split: train/valid/test pairs. With a valid part, training stops early on valid
            NDCG@10 and keeps the best epoch; without one (after
            :meth:`~kgrec.train.split.InteractionSplit.merge_valid_into_train`) it runs
            exactly ``epochs`` epochs.
        epochs: run exactly this many epochs, no early stopping (default ``train_cfg.epochs``
            with early stopping when valid pairs exist).
        progress: show a progress bar over epochs (loss, valid NDCG@10).
        event_weight: ``[E]`` the weight of each event type (``ingest.event_weights``), which
            the transformer user encoder reads event types from.
        label: the progress bar's name (an ensemble's member: ``train 2/3``).

    With ``model.user_encoder: transformer`` (and ``user_mode: history``) an example is a user's train sequence (their
    latest ``sequence_length + 1`` products) and every position predicts the next product
    (:func:`_sequence_loss`), ``train.sequence_batch_size`` users per step; else examples
    are :func:`next_item_pairs`.

    With ``train.nproc`` N > 1, N processes train one model with ``torch.distributed``
    DistributedDataParallel (gloo on the CPU, NCCL on GPUs): every step's batch is split
    between them and their gradients are averaged, so N processes take the steps one
    process would, each on 1/N of the examples. Rank 0 evaluates and decides when to stop.
    Started by ``torchrun`` (one process per GPU or host; :func:`torchrun_process`), this
    process trains as its rank of torchrun's group instead, ignoring ``train.nproc``. Every
    process returns rank 0's model.

    Returns:
        ``(model, product_text, records)``: the module with the kept epoch's weights (on the
        CPU), the text embeddings (None without text) and the training records
        (``{"best_epoch", "seconds", "epochs": [...], "valid": {...}}``).

    Raises:
        TrainingError: no usable device, or no user has two train products.
    """
    started = time.perf_counter()
    resolve_device(train_cfg.device)  # fail before encoding texts or starting processes
    texts = encode_texts(snapshot, model_cfg, features_cfg, progress=progress)
    job = _TrainJob(snapshot, split, model_cfg, train_cfg, texts, seed, progress, epochs, event_weight, label)
    launched = torchrun_process()
    if launched is not None:
        _join_torchrun_group(train_cfg)
        model, records = job.run(*launched)
    elif train_cfg.nproc == 1:
        model, records = job.run()
    else:
        model, records = _run_distributed(job, train_cfg.nproc)
    records["seconds"] = time.perf_counter() - started
    return model, texts.product, records


@dataclass
class _TrainJob:
    """Everything one training run needs; :meth:`run` trains as process ``rank`` of ``world``."""

    snapshot: Snapshot
    split: InteractionSplit
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    texts: Texts
    seed: int
    progress: bool
    epochs: int | None
    event_weight: Tensor | None
    label: str = "train"

    def examples(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """``(users, history_index, history_weight, history_time, targets)``, one row per training
        example (``history_time`` only for the transformer's windows with time gaps, else None)."""
        model_cfg, train = self.model_cfg, self.split.train
        if model_cfg.sequence_encoder:
            # Examples are users' windows; ``targets`` holds their rows (shuffled like pairs).
            hist_index, hist_weight, hist_time = training_windows(
                Histories.from_events(
                    train.user_index, train.product_index, train.timestamp, train.weight, self.snapshot.num_users
                ),
                model_cfg.sequence_length,
                times=model_cfg.time_gaps,
            )
            targets = torch.arange(hist_index.shape[0])
            users = targets
        else:
            users, hist_index, hist_weight, targets = next_item_pairs(train, model_cfg.history_length, model_cfg.recency_decay)
            hist_time = None
        if model_cfg.user_mode != "history":
            # ID users also learn from their first product (no history needed).
            first = torch.ones(len(train), dtype=torch.bool)
            first[1:] = train.user_index[1:] != train.user_index[:-1]
            pad = torch.zeros(int(first.sum()), model_cfg.history_length)
            users = torch.cat([users, train.user_index[first]])
            hist_index = torch.cat([hist_index, pad.long()])
            hist_weight = torch.cat([hist_weight, pad])
            targets = torch.cat([targets, train.product_index[first]])
        if targets.numel() == 0:
            raise TrainingError(
                f"No training examples: every user has fewer than 2 train products ({len(train):,} train pairs, "
                f"{self.snapshot.num_users:,} users). Add more interactions per user."
            )
        return users, hist_index, hist_weight, hist_time, targets

    def run(self, rank: int = 0, world: int = 1) -> tuple[KgrecModel, dict[str, Any]]:
        """Train; with ``world`` > 1 inside an initialised process group (see :func:`_run_distributed`)."""
        model_cfg, train_cfg, split = self.model_cfg, self.train_cfg, self.split
        device = resolve_device(train_cfg.device)
        if device.type == "cuda" and world > 1:
            # torchrun numbers the processes of each host in LOCAL_RANK; mp.spawn runs on one host.
            local = int(os.environ.get("LOCAL_RANK", rank)) if torchrun_process() is not None else rank
            device = torch.device("cuda", local % torch.cuda.device_count())
            torch.cuda.set_device(device)
        seed_everything(self.seed)
        users, hist_index, hist_weight, hist_time, targets = self.examples()
        model = build_model(self.snapshot, split.train, model_cfg, self.texts, self.event_weight)
        model.to(device)
        cached = train_cfg.propagation == "cached" and model_cfg.user_mode == "history"
        optimizer = prepare_steps(model, train_cfg, cached, world)
        sequential = model_cfg.sequence_encoder
        proposal = NegativeProposal(
            torch.bincount(split.train.product_index, minlength=self.snapshot.num_products), train_cfg.unseen_negatives,
            device,
        )
        sampler = NegativeSampler(split.train, self.snapshot.num_products) if train_cfg.loss == "bpr" else None
        generator = torch.Generator().manual_seed(self.seed)

        def step_loss(batch: Tensor) -> Tensor:
            if sequential:
                return _sequence_loss(
                    model, hist_index[batch], hist_weight[batch], None if hist_time is None else hist_time[batch],
                    train_cfg, proposal, generator, device, cached,
                )
            return _step_loss(
                model, users[batch], hist_index[batch], hist_weight[batch], targets[batch],
                train_cfg, sampler, generator, device, cached,
            )

        loss_of = _StepLoss(step_loss, model)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Buffers (histories, texts) are built identically on every rank: no broadcasts.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
                loss_of = DistributedDataParallel(
                    loss_of, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
                )
            torch.manual_seed(self.seed + rank)  # different dropout on each rank's share

        has_valid = len(split.valid) > 0
        early_stop = has_valid and self.epochs is None
        max_epochs = self.epochs if self.epochs is not None else train_cfg.epochs
        history: list[EpochRecord] = []
        best = (-1.0, 0)
        best_state: dict[str, Tensor] | None = None
        best_metrics: dict[str, float] = {}
        stale = 0
        batch_size = train_cfg.sequence_batch_size if sequential else train_cfg.batch_size

        bar = _progress_bar(max_epochs, self.progress and rank == 0, self.label)
        try:
            for epoch in range(1, max_epochs + 1):
                t0 = time.perf_counter()
                model.train()
                if cached and epoch > 1:
                    model.refresh_context()
                optimizer.set_lr(train_cfg.lr * train_cfg.lr_decay ** (epoch - 1))
                order = torch.randperm(targets.numel(), generator=generator)  # the same on every rank
                total = torch.zeros(2)  # loss sum, examples
                for s in range(0, order.numel(), batch_size):
                    batch = order[s : s + batch_size][rank::world]
                    if batch.numel() == 0 or order[s : s + batch_size].numel() < world:
                        continue  # every rank takes every step, or none does
                    loss = loss_of(batch)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += torch.tensor([float(loss.detach()) * batch.numel(), batch.numel()])
                if world > 1:
                    torch.distributed.all_reduce(total)
                if not np.isfinite(float(total[0])):
                    raise TrainingError(
                        f"Training diverged at epoch {epoch} (loss is not finite); lower train.lr (now {train_cfg.lr})."
                    )
                record = EpochRecord(epoch, float(total[0] / total[1].clamp(min=1)), None, 0.0)
                stop = False
                if has_valid and (epoch % train_cfg.eval_every == 0 or epoch == max_epochs):
                    if rank == 0:
                        metrics = _evaluate_model(model, split, "valid", train_cfg.eval_users)
                        record.valid_ndcg = metrics[VALID_METRIC]
                        if record.valid_ndcg > best[0]:
                            best, best_metrics, stale = (record.valid_ndcg, epoch), metrics, 0
                            best_state = copy.deepcopy(model.state_dict())
                        else:
                            stale += 1
                        stop = early_stop and stale >= train_cfg.patience
                    if world > 1:
                        decision = torch.tensor([int(stop)])
                        torch.distributed.broadcast(decision, 0)  # rank 0 decides for all
                        stop = bool(decision[0])
                record.seconds = time.perf_counter() - t0
                history.append(record)
                _update_bar(bar, record, best)
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()

        if early_stop and best_state is not None:
            model.load_state_dict(best_state)
            best_epoch = best[1]
        else:
            best_epoch = len(history)
            if has_valid and not best_metrics and rank == 0:
                best_metrics = _evaluate_model(model, split, "valid", train_cfg.eval_users)
        model.sparse_gradients(False)
        model.eval()
        model.to("cpu")
        records = {
            "best_epoch": best_epoch, "processes": world, "epochs": [asdict(record) for record in history],
            "valid": best_metrics,
        }
        if world > 1:
            # Rank 0 chose the kept epoch: every rank takes its records, so the next fit (the
            # refit for that many epochs) runs alike everywhere. Only rank 0's model is used.
            shared: list[Any] = [records if rank == 0 else None]
            torch.distributed.broadcast_object_list(shared, src=0)
            records = shared[0]
        return model, records


def uses_sampled_rows(model: KgrecModel, cfg: TrainConfig, cached: bool) -> bool:
    """Whether a step computes only its own products' vectors (the transformer encoder with
    cached propagation and sampled softmax on a catalog above ``full_softmax_max_products``):
    the path on which the ID tables can take row-sparse gradients."""
    return (
        cached and model.user_encoder is not None and cfg.negatives > 0
        and model.num_nodes["product"] > cfg.full_softmax_max_products
    )


def prepare_steps(model: KgrecModel, cfg: TrainConfig, cached: bool, world: int = 1) -> Optimizer:
    """Set the model up for the training steps and return their optimiser: cached propagation
    (with each product's live one-hop edges capped where a step trains on its own rows) and,
    in one process on that path, row-sparse table updates."""
    sampled_rows = uses_sampled_rows(model, cfg, cached)
    if cached:
        model.cache_propagation(live_neighbours=LIVE_NEIGHBOURS if sampled_rows else None)
    return Optimizer(model, cfg, sparse=world == 1 and sampled_rows)


class RowAdam:
    """Adam over the rows of tables with row-sparse gradients, touching only those rows
    ("lazy" Adam: a row's moments and value change only at the steps that gather it).

    Adam's update (as ``torch.optim.Adam`` computes it) applied to the gathered rows only;
    ``torch.optim.SparseAdam`` does the same lazily, but its step also adds and indexes
    table-sized dense tensors (measured: 45 of a 100 ms step at 300k products), which
    would make a step grow with the catalog again. Here every operation is on the
    step's rows. Bias correction counts the optimiser's steps.
    """

    def __init__(self, tables: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.tables, self.betas, self.eps = tables, betas, eps
        # torch.optim's shape, so a schedule sets every optimiser's rate alike.
        self.param_groups = [{"lr": lr}]
        self.moments = [(torch.zeros_like(t), torch.zeros_like(t)) for t in tables]
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for table in self.tables:
            table.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        correction1, correction2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        for table, (mean, square) in zip(self.tables, self.moments):
            if table.grad is None:
                continue
            grad = table.grad.coalesce()  # duplicate rows summed
            rows, values = grad.indices()[0], grad.values()
            row_mean = mean.index_select(0, rows).mul_(beta1).add_(values, alpha=1 - beta1)
            row_square = square.index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
            mean.index_copy_(0, rows, row_mean)
            square.index_copy_(0, rows, row_square)
            update = row_mean.div_(correction1).div_(row_square.div_(correction2).sqrt_().add_(self.eps))
            table.index_add_(0, rows, update, alpha=-self.param_groups[0]["lr"])


class Optimizer:
    """Adam over the model's parameters; with ``sparse``, :class:`RowAdam` over the ID tables
    and Adam over the rest.

    With sparse gradients (:meth:`KgrecModel.sparse_gradients`) a step touches only the table
    rows its products gather, so a step's cost does not grow with the catalog. Weight decay
    needs every row at every step, so ``train.weight_decay > 0`` keeps the dense form.
    """

    def __init__(self, model: KgrecModel, cfg: TrainConfig, sparse: bool = False) -> None:
        tables = model.sparse_gradients(sparse and cfg.weight_decay == 0)
        table_ids = {id(t) for t in tables}
        dense = [p for p in model.parameters() if p.requires_grad and id(p) not in table_ids]
        self.optimizers: list[torch.optim.Optimizer | RowAdam] = [
            torch.optim.Adam(dense, lr=cfg.lr, weight_decay=cfg.weight_decay)
        ]
        if tables:
            self.optimizers.append(RowAdam(tables, lr=cfg.lr))

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


class _StepLoss(nn.Module):
    """One training step's loss as a module's forward, which DistributedDataParallel needs
    to synchronise the gradients of ``model``'s parameters."""

    def __init__(self, step_loss: Any, model: KgrecModel) -> None:
        super().__init__()
        self.model = model
        self._step_loss = step_loss

    def forward(self, batch: Tensor) -> Tensor:
        return self._step_loss(batch)


def _run_distributed(job: _TrainJob, nproc: int) -> tuple[KgrecModel, dict[str, Any]]:
    """Run ``job`` in ``nproc`` processes (``torch.multiprocessing.spawn``) and return rank 0's model."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="kgrec-ddp-") as tmp:
        result = Path(tmp) / "rank0.pt"
        try:
            mp.spawn(_distributed_worker, args=(nproc, _free_port(), job, result), nprocs=nproc, join=True)
        except mp.ProcessRaisedException as e:
            message = str(e).strip().splitlines()[-1]
            raise TrainingError(f"Distributed training (train.nproc={nproc}) failed in a worker: {message}") from e
        except mp.ProcessExitedException as e:
            raise TrainingError(
                f"A distributed training worker (train.nproc={nproc}) died ({e}); it may have run out of memory. "
                "Lower train.nproc or the batch size."
            ) from e
        state, records = torch.load(result, weights_only=False)
    model = build_model(job.snapshot, job.split.train, job.model_cfg, job.texts, job.event_weight)
    model.load_state_dict(state)
    model.eval()
    return model, records


def _distributed_worker(rank: int, world: int, port: int, job: _TrainJob, result: Path) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    use_cuda = resolve_device(job.train_cfg.device).type == "cuda"
    dist.init_process_group(_backend(use_cuda), rank=rank, world_size=world)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # the processes share the cores
    try:
        model, records = job.run(rank, world)
        if rank == 0:
            torch.save((model.state_dict(), records), result)
    finally:
        dist.destroy_process_group()


def torchrun_process() -> tuple[int, int] | None:
    """``(rank, world_size)`` when ``torchrun`` (or another env:// launcher) started this
    process as one of several (``RANK``, ``WORLD_SIZE`` > 1, ``MASTER_ADDR``, ``MASTER_PORT``
    set); else None."""
    names = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    if not all(name in os.environ for name in names) or int(os.environ["WORLD_SIZE"]) <= 1:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def _join_torchrun_group(train_cfg: TrainConfig) -> None:
    """Join the process group torchrun set up (once per process: the three fits share it)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(_backend(resolve_device(train_cfg.device).type == "cuda"))


def leave_torchrun_group() -> None:
    """Wait until every rank is done (rank 0 has written the model), then leave the group."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _backend(use_cuda: bool) -> str:
    """NCCL for the GPUs' gradients, gloo for the CPU tensors the loop also reduces (the
    epoch's loss, rank 0's stop decision), which NCCL alone cannot carry."""
    return "cpu:gloo,cuda:nccl" if use_cuda else "gloo"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- helpers
def _product_vectors(model: KgrecModel, cached: bool, rows: Tensor | None = None) -> Tensor:
    """``[len(rows), dim]`` the step's product vectors (all products when ``rows`` is None):
    by cached propagation, or by propagating the whole graph."""
    if cached:
        return model.product_vectors(rows)
    products = model.propagate()["product"]
    return products if rows is None else products[rows]


def _sequence_loss(
    model: KgrecModel,
    index: Tensor,
    weight: Tensor,
    timestamp: Tensor | None,
    cfg: TrainConfig,
    proposal: NegativeProposal,
    generator: torch.Generator,
    device: torch.device,
    cached: bool,
) -> Tensor:
    """Next-product softmax at every position of a batch of users' windows (SASRec-style).

    The same product vectors feed the encoder's inputs and are scored against, so graph,
    text projection and encoder all get gradients. Up to ``full_softmax_max_products``
    every product is a candidate; above it, only the batch's products and the sampled
    negatives are computed at all.

    Args:
        index, weight, timestamp: ``[b, L + 1]`` right-aligned windows (:func:`training_windows`;
            ``timestamp`` None for an encoder without time gaps).
        proposal: which products may be negatives, and the sampled softmax's draw distribution.
    """
    present, index, weight, *times = trim_padding(weight > 0, index, weight, *([] if timestamp is None else [timestamp]))
    index, weight, present = index.to(device), weight.to(device), present.to(device)
    # The encoder reads the input columns' times; the window's last column is only a target.
    input_times = times[0][:, :-1].to(device) if times else None
    assert model.user_encoder is not None
    positions = present[:, :-1] & present[:, 1:]
    num_products = model.num_nodes["product"]
    if num_products <= cfg.full_softmax_max_products or cfg.negatives == 0:
        products = _product_vectors(model, cached)
        hidden = model.user_encoder(products, index[:, :-1], weight[:, :-1], input_times)  # [b, W, dim]
        return softmax_loss(
            hidden[positions], products, index[:, 1:][positions], cfg.temperature,
            candidates=proposal.candidates,
        )
    negatives, log_q = proposal.draw(cfg.negatives, generator)
    rows, local = torch.unique(torch.cat([index.reshape(-1), negatives.to(device)]), return_inverse=True)
    products = _product_vectors(model, cached, rows)
    local_index, local_negatives = local[: index.numel()].view_as(index), local[index.numel() :]
    hidden = model.user_encoder(products, local_index[:, :-1], weight[:, :-1], input_times)
    return sampled_softmax_loss(
        hidden[positions], products, local_index[:, 1:][positions], cfg.temperature, local_negatives, log_q.to(device)
    )


class NegativeProposal:
    """Which products may be negatives, and the sampled softmax's draw distribution over them:
    popularity + 1, normalised.

    ``unseen=False`` leaves the products without training events out (``candidates``, see
    ``train.unseen_negatives``): the full softmax masks with :attr:`candidates` and the
    sampled one draws only from them, so both paths follow this one rule.

    Built once per training run. A draw is a binary search in the cumulative
    distribution, so it costs ``O(n log P)``, not the ``O(P)`` of ``torch.multinomial``
    (which rebuilds the distribution at every call).

    Args:
        popularity: ``[P]`` each product's count of training events.
        unseen: whether products without training events are drawn too.
        device: where the training step runs (where :attr:`candidates` is kept).
    """

    def __init__(self, popularity: Tensor, unseen: bool = True, device: torch.device | str = "cpu") -> None:
        seen = None if unseen else popularity > 0
        # [P] bool, None: every product. Kept on the training device, so a step does not copy it.
        self.candidates: Tensor | None = None if seen is None else seen.to(device)
        weight = popularity.double() + 1.0
        if seen is not None:
            weight = torch.where(seen, weight, 0.0)
        self.probability = (weight / weight.sum()).float()
        self.cumulative = torch.cumsum(weight / weight.sum(), 0)

    def draw(self, num_negatives: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``num_negatives`` products drawn with replacement, and each draw's logQ correction
        ``log(num_negatives · q)`` (both ``[num_negatives]``).

        Drawing by popularity finds the hard, popular negatives; :func:`sampled_softmax_loss`
        lowers each draw's logit by its correction so the sum over the draws estimates the
        sum over the whole catalog (importance sampling, Bengio & Senécal 2008)."""
        uniform = torch.rand(num_negatives, generator=generator, dtype=torch.float64)
        negatives = torch.searchsorted(self.cumulative, uniform, right=True).clamp_(max=self.cumulative.numel() - 1)
        return negatives, torch.log(self.probability[negatives] * num_negatives)


def sampled_softmax_loss(
    user_vec: Tensor,
    product_emb: Tensor,
    target: Tensor,
    temperature: float,
    negatives: Tensor,
    log_q: Tensor,
) -> Tensor:
    """Softmax over the target and drawn negatives, with logQ correction.

    Each drawn product's ``exp(logit)`` is divided by ``num_negatives · q`` (its expected
    count among the draws), so the loss tends to the full softmax's as draws grow. The
    target is always a candidate, uncorrected; draws equal to it are masked (it is
    counted once).

    Args:
        user_vec: ``[n, dim]``; product_emb: ``[P', dim]``; target: ``[n]`` rows of
            ``product_emb``; negatives, log_q: ``[M]`` from :meth:`NegativeProposal.draw`
            (``negatives`` as rows of ``product_emb``).
    """
    u = F.normalize(user_vec, dim=-1)
    p = F.normalize(product_emb, dim=-1)
    pos = (u * p[target]).sum(-1, keepdim=True) / temperature
    neg = u @ p[negatives].t() / temperature - log_q.unsqueeze(0)
    neg = neg.masked_fill(negatives.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
    return F.cross_entropy(torch.cat([pos, neg], dim=1), torch.zeros_like(target))


def _step_loss(
    model: KgrecModel,
    users: Tensor,
    hist_index: Tensor,
    hist_weight: Tensor,
    targets: Tensor,
    cfg: TrainConfig,
    sampler: NegativeSampler | None,
    generator: torch.Generator,
    device: torch.device,
    cached: bool,
) -> Tensor:
    nodes = {"product": model.product_vectors()} if cached else model.propagate()
    users_d, targets_d = users.to(device), targets.to(device)
    user_vec = model.user_vectors(nodes, users_d, hist_index.to(device), hist_weight.to(device))
    products = nodes["product"]
    if cfg.loss == "bpr":
        assert sampler is not None
        negative = sampler.sample(users, generator=generator).to(device)
        return bpr_loss(user_vec, products, targets_d, negative, cfg.temperature)
    negatives = None
    if 0 < cfg.negatives < products.size(0):
        negatives = torch.randint(products.size(0), (cfg.negatives,), generator=generator).to(device)
    return softmax_loss(user_vec, products, targets_d, cfg.temperature, negatives, cfg.in_batch_negatives)


@torch.no_grad()
def _evaluate_model(model: KgrecModel, split: InteractionSplit, part: str, max_users: int | None) -> dict[str, float]:
    """The model as it is now, through the recommender contract and the one evaluator."""
    from kgrec.train.artifacts import KgrecRecommender

    # One member of an ensemble is scored on its own here (for its early stopping).
    recommender = KgrecRecommender({"model": model.config.model_dump(mode="json")})
    recommender.set_state([model])
    model.train()
    return evaluate(recommender, split, part, ks=(10, 20), max_users=max_users)


def _progress_bar(total: int, enabled: bool, label: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="epoch", leave=True)


def _update_bar(bar: Any, record: EpochRecord, best: tuple[float, int]) -> None:
    if bar is None:
        return
    postfix = {"loss": f"{record.loss:.4f}"}
    if record.valid_ndcg is not None:
        postfix["valid_ndcg@10"] = f"{record.valid_ndcg:.4f}"
        postfix["best"] = f"{best[0]:.4f}@{best[1]}"
    bar.set_postfix(postfix)
    bar.update(1)
