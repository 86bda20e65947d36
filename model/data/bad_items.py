"""Bad items inside a dataset: reported by name, left out, counted; the rest of the run goes on.

A corrupt image, an empty, silent or undecodable recording or a broken mask inside a dataset folder
is one bad item among thousands: it is logged as a warning (``<file>: <problem>; left out``),
dropped from the set, and counted in the run's output (``left_out`` in ``metrics.json``, a line on
the console). A single file a user names (a query, a bundle) is not an item: it still fails with
its one-line error. A set left too small for its protocol fails with one line saying so.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from model.core.errors import GeoaudioError, one_line

log = logging.getLogger(__name__)
T = TypeVar("T")
LISTED = 100  # at most this many left-out items are listed by name in a run's record (all are counted)


@dataclass
class LeftOut:
    """The items of one dataset that could not be read: ``(file, problem)`` pairs, in the order met."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, file: Any, problem: str) -> None:
        """Record one bad item and log it as a warning."""
        self.items.append((str(file), problem))
        log.warning("%s: %s; left out", file, problem)

    def extend(self, other: LeftOut) -> None:
        """Record another set's bad items too (already logged there)."""
        self.items += other.items

    def __len__(self) -> int:
        return len(self.items)

    def record(self) -> dict[str, Any]:
        """``{"left_out": n, "left_out_items": [{"file", "problem"} ...]}`` (at most :data:`LISTED`
        named) for a run's metrics.json."""
        return {"left_out": len(self.items),
                "left_out_items": [{"file": f, "problem": p} for f, p in self.items[:LISTED]]}

    def summary(self, what: str = "items") -> str:
        """One line for the console: ``"2 items could not be read and were left out: a.jpg (...), ..."``;
        "" when there are none."""
        if not self.items:
            return ""
        shown = ", ".join(f"{f} ({p})" for f, p in self.items[:3])
        more = f" and {len(self.items) - 3} more" if len(self.items) > 3 else ""
        return f"{len(self.items)} {what} could not be read and were left out: {shown}{more}"


def problem_of(error: BaseException, file: Any) -> str:
    """The problem part of a one-line error that starts with ``<file>: `` (the file is named apart)."""
    text = one_line(error)
    prefix = f"{file}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def keep_readable(items: Sequence[T], check: Callable[[T], Any], left_out: LeftOut,
                  file_of: Callable[[T], Any] = lambda item: item) -> list[T]:
    """The items whose ``check(item)`` raises no :class:`GeoaudioError` (a project error naming the
    file and the problem); the others go to ``left_out`` under ``file_of(item)``."""
    _, kept = map_readable(items, check, left_out, file_of)
    return [items[i] for i in kept]


def map_readable(items: Iterable[T], read: Callable[[T], Any], left_out: LeftOut,
                 file_of: Callable[[T], Any] = lambda item: item) -> tuple[list[Any], list[int]]:
    """``(read(item) for the readable items, their indices)``: like :func:`keep_readable` for a
    reader whose output is wanted (decoded once, not checked then decoded again)."""
    values, kept = [], []
    for i, item in enumerate(items):
        try:
            values.append(read(item))
        except GeoaudioError as e:
            left_out.add(file_of(item), problem_of(e, file_of(item)))
        else:
            kept.append(i)
    return values, kept


# ---- bad keys of a cache folder -----------------------------------------------------------------
# A cache (prepared images, log-mel spectrograms) that meets an item it cannot read leaves a marker
# ``{key}.bad`` holding the one-line problem, written atomically, so that DataLoader workers and
# later runs see it without sharing memory and the dataset leaves the key out from then on. A rerun
# of ``python -m model.data.prepare`` retries marked keys (a fixed file is taken in again).

BAD_SUFFIX = ".bad"


def mark_bad(folder: str | os.PathLike, key: int, problem: str) -> None:
    """Record ``key`` of the cache ``folder`` as unreadable (``{key}.bad`` = the problem line)."""
    from model.core.atomic import write_text_atomic

    Path(folder).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(folder) / f"{int(key)}{BAD_SUFFIX}", problem.strip() + "\n")


def clear_bad(folder: str | os.PathLike, key: int) -> None:
    """Forget the marker of ``key`` (it was read after all)."""
    (Path(folder) / f"{int(key)}{BAD_SUFFIX}").unlink(missing_ok=True)


def bad_keys(folder: str | os.PathLike | None) -> dict[int, str]:
    """``{key: problem}`` of the markers in ``folder`` (empty when it has none or does not exist)."""
    out: dict[int, str] = {}
    if folder is None or not Path(folder).is_dir():
        return out
    for path in Path(folder).glob(f"*{BAD_SUFFIX}"):
        if path.stem.lstrip("-").isdigit():
            try:
                out[int(path.stem)] = path.read_text().strip()
            except OSError:
                out[int(path.stem)] = "unreadable"
    return out
