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
- ``phase``: where the run is (:data:`PHASES`):

  1. ``tiling``: tiles are being mapped into the staging rasters (the fields above).
  2. ``finishing``: every tile is done (``R`` = all cell rows), the staging rasters are sealed and
     every tile record is in a part; the COGs and GeoPackages are being made in ``.partial/``
     (:meth:`geo.products.ProductSet.finish`). ``made`` lists those already made, each written
     atomically and read back whole before it is listed.
  3. ``publishing``: every product is made (``made`` is the full list); they are being moved
     into the output folder (:mod:`geo.publish`); ``published`` lists those already moved.

  Staging files are deleted only with ``.partial/`` itself, after run.json is written, so a rerun
  can always redo what an interrupted phase left undone.

A run killed at any moment (even with SIGKILL) loses at most the work since the last checkpoint:
data written after it is rewritten on resume, and a part file not listed in the journal is ignored;
in the later phases, a product made or moved is never made again.

For the tests of these guarantees only, :func:`kill_point` kills the process with SIGKILL at a
named point between two steps when ``GEOAUDIO_TEST_KILL_AT`` names that point.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geo.runinfo import jsonable
from model.core.atomic import atomic_path

JOURNAL = "journal.json"
VERSION = 1
TILING, FINISHING, PUBLISHING = "tiling", "finishing", "publishing"
PHASES = (TILING, FINISHING, PUBLISHING)
KILL_ENV = "GEOAUDIO_TEST_KILL_AT"  # tests only: the kill_point to die at


@dataclass
class Checkpoint:
    """One journal entry (fields described in the module doc)."""

    key: dict[str, Any]
    rows_done: int = 0
    parts: list[str] = field(default_factory=list)
    tiles_with_data: int = 0
    phase: str = TILING
    made: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)


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
                                int(body["tiles_with_data"]), str(body.get("phase", TILING)),
                                [str(p) for p in body.get("made", [])], [str(p) for p in body.get("published", [])])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if checkpoint.phase not in PHASES or any(Path(n).name != n for n in checkpoint.made + checkpoint.published):
        return None
    if checkpoint.rows_done < 1 or not all((folder / p).is_file() for p in checkpoint.parts):
        return None
    return checkpoint


def kill_point(name: str) -> None:
    """Tests only: SIGKILL this process here when the environment variable ``GEOAUDIO_TEST_KILL_AT``
    equals ``name`` (points: ``finishing``, ``made:<product>``, ``publishing``,
    ``published:<product>``, ``run.json``). Does nothing otherwise."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
