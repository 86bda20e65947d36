"""Publishing a mapping run: moving its finished products from ``OUT/<stem>/.partial/`` into
``OUT/<stem>/``, as a journaled phase that a rerun completes after a kill at any moment.

Order (each step is idempotent, so a rerun simply does it again from the top):

1. The journal (:mod:`geo.journal`) says phase ``publishing`` with every product made (``made``);
   from here on the products are never made again.
2. The old run.json is deleted (a half-published folder is never "up to date"), then the
   products of an older run that this one does not write (``stale``).
3. Each product is renamed into place (``os.replace``, atomic on one file system), and the journal
   lists it in ``published``. A product missing from ``.partial/`` but present in the output
   folder was moved by the interrupted run (the rename is the only way it leaves ``.partial/``).

run.json is written after this (by :mod:`geo.map`), and only then is ``.partial/`` deleted with
the staging files.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from geo.errors import RasterError
from geo.journal import PUBLISHING, Checkpoint, kill_point, read_checkpoint, write_checkpoint
from geo.runinfo import RUN_FILE


def publish(partial: Path, out: Path, checkpoint: Checkpoint, names: Sequence[str],
            stale: Sequence[str] = ()) -> Checkpoint:
    """Publish the products ``names`` (made in ``partial``) into ``out`` (see the module doc);
    ``stale``: product names an older run may have left in ``out`` (deleted unless in ``names``).
    Returns the final checkpoint. RasterError when a product is in neither folder."""
    names = list(names)
    if checkpoint.phase != PUBLISHING:
        checkpoint = replace(checkpoint, phase=PUBLISHING, made=names, published=[])
        write_checkpoint(partial, checkpoint)
        kill_point(PUBLISHING)
    (out / RUN_FILE).unlink(missing_ok=True)
    for name in stale:
        if name not in names:
            (out / name).unlink(missing_ok=True)
    for name in names:
        if name in checkpoint.published:
            continue
        if (partial / name).is_file():
            os.replace(partial / name, out / name)
        elif not (out / name).is_file():
            raise RasterError(f"{partial / name}: product missing before it was published")
        checkpoint = replace(checkpoint, published=checkpoint.published + [name])
        write_checkpoint(partial, checkpoint)
        kill_point(f"published:{name}")
    return checkpoint


def pending_publication(partial: Path, out: Path, key: dict[str, Any]) -> Checkpoint | None:
    """The journal of an interrupted publication of the same run (``key``) whose every product is
    still in ``partial`` or already in ``out``; None otherwise (nothing to finish: map as usual)."""
    found = read_checkpoint(partial, key)
    if found is None or found.phase != PUBLISHING or not found.made:
        return None
    return found if all((partial / n).is_file() or (out / n).is_file() for n in found.made) else None
