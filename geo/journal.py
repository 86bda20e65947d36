"""The checkpoint journal of a mapping run in progress: ``OUT/<stem>/.partial/journal.json``.

While a raster is mapped, its products are staged in ``.partial/`` (see :mod:`geo.cog`). Every
``checkpoint_s`` seconds, at the first batch that reaches a new cell row, :class:`geo.products.ProductSet`
flushes the staging rasters to disk (closes and reopens them), saves the tile records gathered
since the previous checkpoint as one Parquet part file, and then replaces the journal atomically.
A journal therefore always describes files that are complete on disk:

- ``key``: what the run maps and with what — bundle hash, product options, input fingerprint,
  backend, grid and scaling. A rerun resumes only when its own key is identical; otherwise the
  staging folder is thrown away and the raster is mapped from the start.
- ``rows_done`` ``R``: every product holds the final values of all cell rows ``< R``; land cover
  holds its final output rows ``< R * stride - pad`` (``pad = (T - stride) // 2``, clamped at 0).
- ``parts``: the Parquet files holding the tiles.gpkg records of cell rows ``< R``.
- ``tiles_with_data``: how many of those tiles had valid pixels.

A run killed at any moment (even with SIGKILL) loses at most the work since the last checkpoint:
data written after it is rewritten on resume, and a part file not listed in the journal is ignored.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geo.runinfo import jsonable
from model.core.atomic import atomic_path

JOURNAL = "journal.json"
VERSION = 1


@dataclass
class Checkpoint:
    """One journal entry (fields described in the module doc)."""

    key: dict[str, Any]
    rows_done: int = 0
    parts: list[str] = field(default_factory=list)
    tiles_with_data: int = 0


def normalise_key(key: dict[str, Any]) -> dict[str, Any]:
    """The key as it reads back from JSON (tuples become lists, NumPy scalars numbers), so a fresh
    key compares equal to a stored one."""
    return json.loads(json.dumps(key, default=jsonable))


def write_checkpoint(folder: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Replace ``folder/journal.json`` atomically with ``checkpoint``."""
    target = Path(folder) / JOURNAL
    body = {"version": VERSION, **asdict(checkpoint), "key": normalise_key(checkpoint.key)}
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(body, indent=1) + "\n")
    return target


def read_checkpoint(folder: str | os.PathLike, key: dict[str, Any]) -> Checkpoint | None:
    """The journal of ``folder`` when it belongs to a run with this ``key`` and every part file it
    lists exists; None otherwise (missing, unreadable, another run, files gone)."""
    folder = Path(folder)
    try:
        body = json.loads((folder / JOURNAL).read_text())
        if body.get("version") != VERSION or body.get("key") != normalise_key(key):
            return None
        checkpoint = Checkpoint(body["key"], int(body["rows_done"]), [str(p) for p in body["parts"]],
                                int(body["tiles_with_data"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if checkpoint.rows_done < 1 or not all((folder / p).is_file() for p in checkpoint.parts):
        return None
    return checkpoint
