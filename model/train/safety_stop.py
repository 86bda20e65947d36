"""A wall-clock safety stop for training: not a budget, an alarm.

Training budgets are counted in epochs or optimiser steps, so that the same command gives the same
model on a busy and on an idle machine. A time limit may still stop a run that would otherwise go
on far longer than expected; when it does, the run is *truncated*: :class:`SafetyStop` says so
loudly on stderr and remembers it, and the training commands record ``truncated: true`` in their
metrics and in the bundle's provenance (:func:`was_truncated`), so that nothing downstream mistakes
a cut-short model for a finished one.
"""
from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import Callback


class SafetyStop(Callback):
    """Stops training once ``minutes`` of wall-clock time have passed since training started
    (checked after every training batch) and marks the run as truncated."""

    def __init__(self, minutes: float) -> None:
        super().__init__()
        if minutes <= 0:
            raise ValueError(f"safety stop: minutes must be positive, got {minutes}")
        self.minutes = float(minutes)
        self.truncated = False
        self._started: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if self.truncated or self._started is None:
            return
        elapsed_min = (time.monotonic() - self._started) / 60.0
        if elapsed_min >= self.minutes:
            self.truncated = True
            trainer.should_stop = True
            print(f"WARNING: training TRUNCATED by the {self.minutes:g}-minute safety stop after "
                  f"{trainer.global_step} steps (epoch {trainer.current_epoch}); the model did not get its "
                  f"full budget and is recorded as truncated", file=sys.stderr, flush=True)


def was_truncated(trainer: L.Trainer) -> bool:
    """Whether a :class:`SafetyStop` among the trainer's callbacks stopped training early."""
    return any(isinstance(c, SafetyStop) and c.truncated for c in trainer.callbacks)
