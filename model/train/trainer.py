"""The one Lightning Trainer builder of every training command, and the precision it trains in.

``build_trainer`` logs to ``OUT/logs/csv`` and ``OUT/logs/tensorboard``; checkpoints are what the
caller asks for (:func:`last_checkpoints`, :func:`best_checkpoint`), none otherwise. The budget is
``epochs`` epochs or ``max_steps`` optimiser steps, whichever comes first; ``max_minutes`` is only a
safety stop (:class:`~model.train.safety_stop.SafetyStop`): a run it cuts short says so on stderr
and :func:`~model.train.safety_stop.was_truncated` tells the caller, who records ``truncated``.

Scale: ``devices`` per node times ``num_nodes`` processes train data-parallel (Lightning's DDP, its
default process group backend: gloo on CPU, NCCL on CUDA). Lightning's cluster environments decide
the ranks (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK`` with the default launcher, which starts
``devices`` processes on each node; SLURM; torchrun), so every node runs the same command
(docs/scale.md). Checkpoints and loggers write from global rank 0 only (Lightning's
strategy and ``rank_zero_only``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

LOG_EVERY_N_STEPS = 5


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 autocast on GPUs that have it, fp16 on older GPUs, bf16 on CPUs with native
    bf16, else fp32; any other value is returned as given."""
    if precision != "auto":
        return precision
    import torch

    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def batch_limit(limit: float) -> float | int:
    """Lightning reads a float in [0, 1] as a fraction of the epoch and an int as a number of
    batches: values above 1 become that many batches."""
    return int(limit) if limit > 1 else float(limit)


def last_checkpoints(out: str | Path, every: int = 0) -> "ModelCheckpoint":
    """``OUT/checkpoints/last.ckpt`` after every epoch (replacing the one before); with ``every`` = N > 0
    instead ``epoch{N-1:03d}.ckpt``, ``epoch{2N-1:03d}.ckpt``, ... kept for good, each copied to
    ``last.ckpt`` (so ``--resume`` continues from the last kept epoch). Each file holds the weights and
    the optimiser state: 270 MB for two ResNet-18s with Adam."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    folder = Path(out) / "checkpoints"
    if every <= 0:  # no monitor and top 1: the newest epoch, under one name
        return ModelCheckpoint(dirpath=folder, filename="last", save_top_k=1, enable_version_counter=False)
    return ModelCheckpoint(dirpath=folder, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                           save_top_k=-1, every_n_epochs=int(every), save_last=True)


def best_checkpoint(out: str | Path, monitor: str = "val_loss", mode: str = "min") -> "ModelCheckpoint":
    """``OUT/checkpoints/best.ckpt``: the epoch with the lowest (``mode`` min) or highest ``monitor``."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    return ModelCheckpoint(dirpath=Path(out) / "checkpoints", filename="best", monitor=monitor, mode=mode,
                           save_top_k=1)


def world_size(devices: int, num_nodes: int = 1) -> int:
    """Processes of a data-parallel run: ``devices`` per node on ``num_nodes`` nodes; one line for
    counts below 1 (Lightning's own message names neither flag)."""
    if int(devices) < 1 or int(num_nodes) < 1:
        from model.core.cli import fail

        fail(f"devices and num_nodes must be at least 1, got {devices} and {num_nodes}")
    return int(devices) * int(num_nodes)


def build_trainer(out: str | Path, *, epochs: int | None = None, max_steps: int = -1,
                  accelerator: str = "auto", devices: int = 1, num_nodes: int = 1, precision: str = "auto",
                  callbacks: Sequence["Callback"] = (), validate: bool = True, max_minutes: float = 0.0,
                  limit_train_batches: float = 1.0, deterministic: bool | None = None,
                  sync_batchnorm: bool = False) -> "L.Trainer":
    """A Lightning Trainer writing under ``out``.

    epochs / max_steps: stop after that many epochs / optimiser steps (epochs None: Lightning's
    default, 1000 without max_steps; -1: no limit by that count); devices: processes per node,
    num_nodes: nodes running the same command, DDP whenever devices x num_nodes > 1
    (:func:`world_size`); sync_batchnorm: under DDP, batch norm statistics over every process's
    batch (Lightning's SyncBatchNorm conversion) rather than each process's own; precision:
    as :func:`resolve_precision`; callbacks: checkpointing is on exactly when one of them is a
    ModelCheckpoint; validate False: no validation loop and no sanity check; max_minutes > 0:
    wall-clock safety stop (a :class:`~model.train.safety_stop.SafetyStop` callback, not a budget);
    limit_train_batches: as :func:`batch_limit`; deterministic: passed to Lightning (None leaves
    PyTorch's setting alone).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from model.train.safety_stop import SafetyStop

    out = Path(out)
    parallel = world_size(devices, num_nodes) > 1
    callbacks = [*callbacks, *([SafetyStop(max_minutes)] if max_minutes > 0 else [])]
    loggers = [CSVLogger(out / "logs", name="csv"), TensorBoardLogger(out / "logs", name="tensorboard")]
    no_validation = {} if validate else {"limit_val_batches": 0, "num_sanity_val_steps": 0}
    return L.Trainer(
        default_root_dir=out, max_epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices,
        num_nodes=num_nodes, strategy="ddp" if parallel else "auto", sync_batchnorm=sync_batchnorm and parallel,
        precision=resolve_precision(precision, accelerator),
        callbacks=list(callbacks), logger=loggers, log_every_n_steps=LOG_EVERY_N_STEPS,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        limit_train_batches=batch_limit(limit_train_batches), deterministic=deterministic,
        enable_model_summary=False, **no_validation,
    )
