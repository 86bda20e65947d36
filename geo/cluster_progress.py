"""Progress of a ``geo.map --ray`` run: one bar for files and one for tiles across the cluster.

Each file's task reports ``(path, done, total)`` after every batch (the same ``on_progress``
callback a local run gets, :mod:`geo.progress`) to a small Ray actor, :class:`ProgressBoard`,
that keeps the latest pair per file. The driver polls the board a few times a second
(:meth:`ClusterProgress.poll`) and moves the bars: tiles done over the tiles of the files started
so far (the total grows as files start), and files finished over files. A file whose task was
killed and retried starts again from its checkpoint, so its count goes back and no tile is counted
twice. ``--progress-json`` (``MapOptions.on_progress``) is called on the driver with each change,
with the input path as the user gave it.
"""
from __future__ import annotations

from typing import Any, Callable

import ray
from tqdm import tqdm

from geo.progress import OnProgress

BOARD_RESTARTS = 3  # restarts of a killed progress board


class ProgressBoard:
    """Ray actor: the latest (tiles done, tiles total) of each input path."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, int]] = {}

    def report(self, path: str, done: int, total: int) -> None:
        """Record the latest count of ``path``."""
        self.files[path] = (int(done), int(total))

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every input's latest (done, total)."""
        return dict(self.files)


class BoardReporter:
    """An ``OnProgress`` callback for a task: sends each count to the board without waiting."""

    def __init__(self, board: Any) -> None:
        self.board = board

    def __call__(self, path: str, done: int, total: int) -> None:
        self.board.report.remote(path, done, total)


class ClusterProgress:
    """The driver's bars (tqdm on stderr; hidden when ``show`` is False) and the user's
    ``on_progress``, fed from the board. ``names`` maps the paths the tasks report (absolute) to
    the paths as given."""

    def __init__(self, files: int, show: bool, on_progress: OnProgress | None, names: dict[str, str]) -> None:
        self.board = ray.remote(ProgressBoard).options(num_cpus=0, max_restarts=BOARD_RESTARTS).remote()
        self.on_progress, self.names = on_progress, names
        self.counts: dict[str, tuple[int, int]] = {}
        self.files = tqdm(total=files, desc="files", unit="file", position=0, disable=not show)
        self.tiles = tqdm(total=0, desc="tiles", unit="tile", position=1, disable=not show)

    def reporter(self) -> Callable[[str, int, int], None]:
        """The callback to pass to the tasks (``MapOptions.on_progress``)."""
        return BoardReporter(self.board)

    def poll(self) -> None:
        """Read the board and show what changed (nothing while a killed board restarts: the tasks'
        next reports refill it)."""
        try:
            found = ray.get(self.board.snapshot.remote())
        except ray.exceptions.RayError:
            return
        for path, count in found.items():
            self._show(path, *count)

    def file_done(self, path: str, mapped: bool) -> None:
        """One more file is finished (``path`` as reported); a mapped one counts all its tiles."""
        if mapped and path in self.counts:
            total = self.counts[path][1]
            self._show(path, total, total)
        self.files.update(1)

    def _show(self, path: str, done: int, total: int) -> None:
        if self.counts.get(path) == (done, total):
            return
        self.counts[path] = (done, total)
        self.tiles.total = sum(t for _, t in self.counts.values())
        self.tiles.n = sum(d for d, _ in self.counts.values())
        self.tiles.refresh()
        if self.on_progress is not None:
            self.on_progress(self.names.get(path, path), done, total)

    def close(self) -> None:
        """Close the bars and stop the board."""
        self.tiles.close()
        self.files.close()
        ray.kill(self.board)
