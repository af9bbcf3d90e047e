"""How many torch threads a step runs on.

A served request is many small tensor steps, where waking a second thread costs more than
it saves (:func:`torch_threads` with ``rank.request_threads``, 1). The exception is the
scan of the whole catalog, one matrix product bound by memory bandwidth, which a second
core adds to: it runs on :func:`scan_threads` threads (``rank.scan_threads``) when the
caller asks for them, and on the surrounding setting otherwise (a batch of users).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from kgrec.errors import ConfigError

_scan_threads: ContextVar[int | None] = ContextVar("scan_threads", default=None)


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
        num_threads = min(num_threads, os.cpu_count() or 1)
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
