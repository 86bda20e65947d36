"""Progress of a mapping run, for people (tqdm bars) and for programs (a callback, JSON lines).

``geo.map`` advances one :class:`TileProgress` per input by the tiles of each inferred batch. It
moves the tqdm bar and calls ``on_progress(path, done, total)`` with the tiles done so far
(counting those a resumed run found finished) and the tiles of the input's grid.
``python -m geo.map --progress-json`` passes :func:`json_lines`, which writes one line per update
to stderr::

    {"progress": {"file": "scene.tif", "done": 96, "total": 256}}

so a program (the app) can follow a child ``geo.map`` without parsing bars.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable, TextIO

OnProgress = Callable[[str, int, int], None]  # (input path, tiles done, tiles total)


class TileProgress:
    """A tqdm-like ``update(n)`` that moves ``bar`` (or nothing) and reports to ``on_progress``."""

    def __init__(self, path: str, total: int, done: int = 0, bar: Any = None,
                 on_progress: OnProgress | None = None) -> None:
        self.path, self.total, self.done = path, total, done
        self.bar, self.on_progress = bar, on_progress
        self._report()

    def update(self, n: int) -> None:
        """``n`` more tiles are done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        self._report()

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.path, self.done, self.total)


def json_lines(stream: TextIO | None = None) -> OnProgress:
    """A callback writing each update as one JSON line (format in the module doc) to ``stream``
    (default: the current ``sys.stderr``), flushed at once."""

    def report(path: str, done: int, total: int) -> None:
        out = stream or sys.stderr
        out.write(json.dumps({"progress": {"file": path, "done": done, "total": total}}) + "\n")
        out.flush()

    return report


def parse_line(line: str) -> tuple[str, int, int] | None:
    """(file, done, total) from one line written by :func:`json_lines`, else None."""
    if not line.startswith('{"progress"'):
        return None
    try:
        p = json.loads(line)["progress"]
        return str(p["file"]), int(p["done"]), int(p["total"])
    except (ValueError, KeyError, TypeError):
        return None
