"""How many threads a step runs on: torch's, and numpy's BLAS.

A served request is many small tensor steps, where waking a second thread costs more than
it saves (:func:`torch_threads` with ``rank.request_threads``, 1). The exception is the
scan of the whole catalog, one matrix product bound by memory bandwidth, which a second
core adds to: it runs on :func:`scan_threads` threads (``rank.scan_threads``) when the
caller asks for them, and on the surrounding setting otherwise (a batch of users).
numpy's small matrix products run on one BLAS thread (:func:`blas_threads`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

from kgrec.errors import ConfigError

_scan_threads: ContextVar[int | None] = ContextVar("scan_threads", default=None)
_blas: Any = None  # numpy's BLAS libraries (threadpoolctl), found at the first blas_threads
_CORES = os.cpu_count() or 1  # once: asking costs system calls on every served request


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` torch threads (``None``: unchanged), then restore."""
    if num_threads is None:
        yield
        return
    if num_threads < 1:
        raise ConfigError(f"num_threads must be at least 1; found {num_threads}.")
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def scan_threads(num_threads: int | None) -> Iterator[None]:
    """Within the block, :func:`scan` runs on ``num_threads`` torch threads (at most the
    machine's cores; ``None``: on the surrounding setting)."""
    if num_threads is not None:
        num_threads = min(num_threads, _CORES)
    token = _scan_threads.set(num_threads)
    try:
        yield
    finally:
        _scan_threads.reset(token)


def scan(vectors: Tensor, products_by_column: Tensor) -> Tensor:
    """``vectors [b, dim] @ products_by_column [dim, P]``: every product's score, on the
    threads :func:`scan_threads` set."""
    with torch_threads(_scan_threads.get()):
        return vectors @ products_by_column


@contextmanager
def blas_threads(num_threads: int) -> Iterator[None]:
    """Run the block with numpy's BLAS (OpenBLAS in numpy's wheels) on ``num_threads`` threads,
    then restore. On more than one, OpenBLAS's workers keep spinning after each product large
    enough to split, taking the cores that torch and Neo4j need next: ranking every user of a
    100k-product shop took 1.3x as long with numpy's encoder on two BLAS threads as on one."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController().select(user_api="blas")
    with _blas.limit(limits=num_threads):
        yield
