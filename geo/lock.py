"""One mapping run at a time per output folder: the lock file ``OUT/<stem>/.lock``.

A run takes the lock before it looks at the folder (is it up to date? is there a run to resume?)
and holds it until its products and run.json are in place, so two ``geo.map`` processes (two
terminals, two users of the app's shared map cache) never write one folder at once. The lock is
an exclusive ``flock`` on the file, which holds the owner's PID, host and start time (JSON) so
that a second run can say who is mapping. The kernel drops the lock when its process ends, however
it ends (SIGKILL included): a lock file left by a dead process is simply taken over. On release
the file is deleted while still locked; a waiter that then obtains the lock on the deleted file
notices that the path now names another file (or none) and tries again.

Without ``fcntl`` (Windows) there is no lock: runs on one folder must not overlap there.
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from geo.errors import FolderBusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
POLL_S = 0.2  # seconds between tries while waiting


def holder(folder: Path) -> dict[str, object]:
    """What the lock file of ``folder`` says about its owner (``pid``, ``host``, ``started``); {} when
    unreadable."""
    try:
        found = json.loads((folder / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def busy_message(folder: Path) -> str:
    """``FOLDER is being mapped by process N on HOST (since T)``."""
    who = holder(folder)
    if not who.get("pid"):
        return f"{folder} is being mapped by another process"
    return f"{folder} is being mapped by process {who['pid']} on {who.get('host', '?')} (since {who.get('started', '?')})"


@contextmanager
def folder_lock(folder: Path, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock of ``folder`` (created when missing) for the block. When another process holds
    it: FolderBusyError (one line naming that process) or, with ``wait``, wait until it is free
    (``on_wait(message)`` is called once first)."""
    if fcntl is None:
        yield
        return
    fd = _acquire(folder, wait, on_wait)
    try:
        yield
    finally:
        (folder / LOCK_FILE).unlink(missing_ok=True)  # while locked: see the module doc
        os.close(fd)


def _acquire(folder: Path, wait: bool, on_wait: Callable[[str], None] | None) -> int:
    """Lock ``folder/.lock`` and write our PID into it; returns the open descriptor."""
    announced = False
    while True:
        fd = _try_lock(folder)
        if fd is not None:
            _write_holder(fd)
            return fd
        message = busy_message(folder)
        if not wait:
            raise FolderBusyError(f"{message}; run again later, or pass --wait")
        if on_wait is not None and not announced:
            on_wait(f"{message}; waiting for it")
            announced = True
        time.sleep(POLL_S)


def _try_lock(folder: Path) -> int | None:
    """The descriptor of ``folder/.lock`` locked by us, or None when another process holds it."""
    path = folder / LOCK_FILE
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current, mine = os.stat(path), os.fstat(fd)
            if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder deleted the file as we opened it: try again on a new one


def _write_holder(fd: int) -> None:
    """Replace the lock file's content with this process's PID, host and start time."""
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, body + b"\n", 0)
    except OSError:  # a full disk: the lock holds all the same, only its owner goes unnamed
        pass
