"""Same command, seed and thread count -> same model, on a busy and on an idle machine.

What makes a CPU training run repeatable:

- every random generator seeded from the run's seed: Python's, NumPy's and torch's (Lightning's
  ``seed_everything``), and the DataLoader workers (``workers=True``: each worker's generators are
  derived from the loader's base seed, the worker id and the rank);
- the shuffling and the workers' base seed drawn from a generator of the run's own
  (:func:`model.data.datamodule.loader_generator`), not from the global one;
- a fixed number of intra-op threads, since the thread count decides how float sums are split and
  so their rounding (torch's default is the number of cores, which differs between machines);
- deterministic algorithms where PyTorch has a choice (``torch.use_deterministic_algorithms``);
- budgets in epochs or steps, never in minutes (:mod:`model.train.safety_stop`).

:func:`make_deterministic` does the first, third and fourth and returns what the bundle's
provenance records.
"""
from __future__ import annotations

from typing import Any


def make_deterministic(seed: int, threads: int = 0) -> dict[str, Any]:
    """Seed everything (workers included), set ``threads`` intra-op threads (0: keep torch's
    current count) and switch on deterministic algorithms; returns ``{"seed", "threads",
    "deterministic"}`` for the provenance."""
    import lightning as L
    import torch

    if threads < 0:
        raise ValueError(f"threads must be 0 (torch's default) or positive, got {threads}")
    if threads:
        torch.set_num_threads(int(threads))
    L.seed_everything(int(seed), workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return {"seed": int(seed), "threads": int(torch.get_num_threads()), "deterministic": True}

