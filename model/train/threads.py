"""The CPU thread budget of a training run: the step, the loader's workers and other work on the
machine share the cores without fighting.

A training step runs ``threads`` intra-op threads (the run's ``--threads``, recorded in the bundle
for determinism; it is never changed to suit the load, since the thread count decides how float
sums are split). Beside it run the loader's worker processes, and on a shared machine other jobs.
Two things make that mix collapse rather than share (benchmarks/train_throughput.py measures it):

- OpenMP threads that finish their share of a parallel region *spin* while they wait for the
  others (GNU OpenMP, which PyTorch ships, spins for up to ~300,000 iterations by default). With
  more runnable threads than cores, a spinning thread burns the core that the thread it waits for,
  a loader worker or another job needs. ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep.
  libgomp reads it once, when it is loaded (at ``import torch``), so :func:`prepare_process` sets
  it in the environment before torch is first imported; afterwards it can no longer take effect
  (the function then says so in its return value).
- Worker processes that each start a pool of threads (torch, BLAS/OpenMP, OpenCV); they run one
  thread each (:func:`model.data.workers.worker_init`).

A policy set by the user in the environment is kept.
"""
from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"


def prepare_process() -> str:
    """Before torch is imported: make OpenMP threads wait passively (unless the environment already
    chooses a policy). Returns the policy in effect, or ``"unknown (torch already imported)"``."""
    if "torch" in sys.modules:
        return os.environ.get(WAIT_POLICY, "unknown (torch already imported)")
    os.environ.setdefault(WAIT_POLICY, PASSIVE)
    return os.environ[WAIT_POLICY]
