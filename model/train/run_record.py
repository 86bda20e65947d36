"""What a training run did: its budget, the steps and epochs it actually ran, how it was seeded, and
whether a safety stop cut it short.

:func:`run_record` is what every training command puts into its bundle's provenance (and its
metrics): ``epochs`` (the budget), ``epochs_run`` and ``steps`` (optimiser steps done,
``trainer.global_step``), ``seed``, ``threads``, ``deterministic`` and ``truncated``. It holds no
wall-clock figure, so the same command, seed and thread count give the same bundle bytes; seconds
go into ``RUN/training.json`` (:func:`write_training_record`) and ``metrics.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from model.core.atomic import write_json_atomic
from model.train.safety_stop import was_truncated

if TYPE_CHECKING:
    import lightning as L

TRAINING_FILE = "training.json"


def run_record(trainer: "L.Trainer", epochs: int, determinism: Mapping[str, Any]) -> dict[str, Any]:
    """The budget and what was done: ``{"epochs", "epochs_run", "steps", "seed", "threads",
    "deterministic", "truncated"}`` (``determinism``: what
    :func:`~model.train.determinism.make_deterministic` returned)."""
    return {"epochs": int(epochs), "epochs_run": int(trainer.current_epoch), "steps": int(trainer.global_step),
            **dict(determinism), "truncated": was_truncated(trainer)}


def write_training_record(out: str | Path, record: Mapping[str, Any], seconds: float) -> Path:
    """``out/training.json``: the run record plus its wall-clock ``seconds``, written atomically
    (not ``metrics.json``, which holds downstream scores for the reports)."""
    return write_json_atomic(Path(out) / TRAINING_FILE, {**record, "seconds": round(float(seconds), 1)})
