"""DataLoader worker processes that leave the cores to the training step.

Each worker decodes and augments one sample at a time; a second thread inside a worker only
competes with the step's threads and with the other workers for the same cores. So every worker
runs with one thread: torch's intra-op pool (PyTorch already sets it in workers) and every
BLAS/OpenMP pool a library may start (``threadpoolctl``: NumPy's OpenBLAS or MKL, scikit-learn's
OpenMP), and OpenCV's pool when OpenCV is loaded.

Seeding is unchanged: when Lightning seeds workers (``seed_everything(..., workers=True)`` sets
``PL_SEED_WORKERS=1``), :func:`worker_init` calls Lightning's own worker seeding, which a loader
with its own ``worker_init_fn`` would otherwise not get.
"""
from __future__ import annotations

import os
import sys


def limit_threads(threads: int = 1) -> None:
    """Limit this process's torch, BLAS/OpenMP and OpenCV thread pools to ``threads``."""
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    if "cv2" in sys.modules:  # only when already loaded: importing OpenCV costs ~0.2 s per worker
        sys.modules["cv2"].setNumThreads(threads)


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of every training DataLoader: one thread per worker, then Lightning's
    seeding of the worker when the run asked for seeded workers."""
    limit_threads(1)
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
