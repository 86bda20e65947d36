"""Run independent jobs in order, in worker processes when it pays, with a progress bar."""
from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

J = TypeVar("J")
R = TypeVar("R")
MIN_JOBS_FOR_WORKERS = 16


def default_workers(jobs: int) -> int:
    """One process per CPU core (at most 8) for 16 jobs or more, else the calling process alone."""
    return min(os.cpu_count() or 1, 8) if jobs >= MIN_JOBS_FOR_WORKERS else 1


def _single_threaded() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per process, since the processes fill the cores."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def run_jobs(
    fn: Callable[[J], R], jobs: Sequence[J], workers: int | None, desc: str, progress: bool = True
) -> list[R]:
    """``[fn(job) for job in jobs]`` in job order; ``workers`` processes (None: default_workers)."""
    workers = default_workers(len(jobs)) if workers is None else max(1, int(workers))
    bar = tqdm(total=len(jobs), desc=desc, unit="item", disable=not progress)
    results: list[R] = []
    with bar:
        if workers == 1:
            for job in jobs:
                results.append(fn(job))
                bar.update()
            return results
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers, initializer=_single_threaded) as pool:
            for result in pool.imap(fn, jobs, chunksize=1):
                results.append(result)
                bar.update()
    return results
