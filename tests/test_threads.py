"""The catalog scan runs on the threads its caller asks for, and every other step does not."""

import os

import torch

import kgrec.threads as threads
from kgrec.threads import scan, scan_threads, torch_threads


def recorded_thread_counts(monkeypatch) -> list[int]:
    counts: list[int] = []
    real = torch.set_num_threads

    def recording(n: int) -> None:
        counts.append(n)
        real(n)

    monkeypatch.setattr(threads.torch, "set_num_threads", recording)
    return counts


def test_scan_runs_on_the_scan_threads_then_restores_the_setting(monkeypatch):
    vectors, products = torch.randn(3, 8), torch.randn(8, 50)
    initial = torch.get_num_threads()
    counts = recorded_thread_counts(monkeypatch)
    with torch_threads(1):
        with scan_threads(2):
            scores = scan(vectors, products)
        assert torch.get_num_threads() == 1
    assert torch.equal(scores, vectors @ products)
    assert counts == [1, min(2, os.cpu_count() or 1), 1, initial]  # the request's threads, the scan's, back, restored


def test_scan_outside_scan_threads_keeps_the_surrounding_setting(monkeypatch):
    counts = recorded_thread_counts(monkeypatch)
    with scan_threads(2):
        pass
    scan(torch.randn(1, 4), torch.randn(4, 6))  # a batch of users: the caller's threads
    assert counts == []


def test_scan_threads_are_capped_at_the_machines_cores(monkeypatch):
    monkeypatch.setattr(threads, "_CORES", 1)
    counts = recorded_thread_counts(monkeypatch)
    with torch_threads(1), scan_threads(8):
        scan(torch.randn(1, 4), torch.randn(4, 6))
    assert 8 not in counts and counts[1] == 1


def test_numpy_blas_runs_on_the_threads_asked_for_then_restores():
    import numpy as np
    from threadpoolctl import threadpool_info

    from kgrec.threads import blas_threads

    np.ones((4, 4)) @ np.ones((4, 4))

    def numpy_blas_threads() -> list[int]:
        # numpy's own BLAS (its wheel's numpy.libs); other libraries' (scipy's, faiss's) are not asked for.
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas" and "numpy" in lib["filepath"]]

    before = numpy_blas_threads()
    assert before, "numpy's BLAS was not found"
    with blas_threads(1):
        assert numpy_blas_threads() == [1] * len(before)
    assert numpy_blas_threads() == before
