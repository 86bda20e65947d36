"""Reading a file that claims to be a PyTorch checkpoint, safely and with one-line errors.

The checks, in order, each a :class:`CheckpointError` naming the file:

1. the path is a readable regular file (missing, a folder and permission denied each say so);
2. it is the zip archive ``torch.save`` writes (PyTorch >= 1.6) with a ``data.pkl`` member: an
   empty file, random bytes and a truncated archive are refused here, before anything is loaded;
3. the uncompressed size of its members, read from the zip index (nothing is decompressed), is
   at most ``max_bytes``: a small zip cannot make the loader allocate gigabytes;
4. ``torch.load(..., weights_only=True)``: plain tensors and containers only. A pickle that would
   need code is refused naming what it refers to; torch's advice to retry with
   ``weights_only=False`` is never passed on.

Used by the importer of published checkpoints, ``--init`` weights files and ``pretrain --resume``.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from model.core.errors import GeoaudioError, one_line

MAX_CHECKPOINT_BYTES = 1 << 30  # uncompressed size of all the archive's members (1 GiB)


class CheckpointError(GeoaudioError, ValueError):
    """A file that is not a loadable checkpoint; the message names it and says why."""


def gib(n: int) -> str:
    """``n`` bytes in GiB with two decimals, e.g. ``"1.00 GiB"``."""
    return f"{n / (1 << 30):.2f} GiB"


def check_readable(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """``path`` as a Path when it is a regular file this process may read; CheckpointError saying
    which of missing, a folder or not readable (permissions) it is otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such {what} file")
    if not path.is_file():
        raise CheckpointError(f"{path}: is a folder or a special file, not a {what} file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the {what} file ({e.strerror or one_line(e)})") from None
    return path


def check_archive(path: str | os.PathLike, max_bytes: int | None = MAX_CHECKPOINT_BYTES,
                  limit_hint: str = "") -> int:
    """The uncompressed size in bytes of a ``torch.save`` zip archive, read from its index; a
    CheckpointError for an empty or unreadable file, another kind of file, or one holding more than
    ``max_bytes`` (None: no limit; ``limit_hint`` is appended to that message)."""
    path = check_readable(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (not the zip archive torch.save writes: "
                              f"truncated, or another kind of file)") from None
    if not any(m.filename.endswith("/data.pkl") or m.filename == "data.pkl" for m in members):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (a zip archive without data.pkl)")
    total = sum(m.file_size for m in members)
    if max_bytes is not None and total > max_bytes:
        raise CheckpointError(f"{path}: holds {gib(total)} of data, more than the limit of {gib(max_bytes)}"
                              f"{limit_hint}")
    return total


def load_error(path: str | os.PathLike, error: BaseException) -> CheckpointError:
    """One line for a failed ``torch.load``: what a code-needing pickle refers to, never torch's
    advice to load without ``weights_only``."""
    text = str(error)
    needs = re.search(r"GLOBAL ([\w.]+)", text)
    if needs:
        return CheckpointError(f"{path}: not a plain tensor checkpoint (loading it would need to run code: "
                               f"it refers to {needs.group(1)})")
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        return CheckpointError(f"{path}: unreadable checkpoint (its data.pkl is not a plain tensor pickle)")
    return CheckpointError(f"{path}: unreadable checkpoint ({one_line(error)[:200]})")


def load_checkpoint(path: str | os.PathLike, max_bytes: int | None = MAX_CHECKPOINT_BYTES,
                    limit_hint: str = "") -> Any:
    """What ``torch.save`` stored in ``path``, loaded on the CPU with ``weights_only=True``, after
    :func:`check_archive`; every failure is one CheckpointError line."""
    import torch

    path = Path(path)
    check_archive(path, max_bytes, limit_hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError,
            TypeError) as e:
        raise load_error(path, e) from None
