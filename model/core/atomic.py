"""Atomic writes and staging folders: the one place where files are put into place.

The guarantee: a reader of ``target`` sees the old file or the whole new one, never a part, and
nothing temporary is left behind.

How: the new content is written under a hidden temporary name in the target's own folder (the
same file system, so the final :func:`os.replace` is atomic), renamed onto the target when the
write succeeded, and deleted when it raised: any exception, ``KeyboardInterrupt`` and
``SystemExit`` included, which then propagates unchanged. Only a process killed outright (SIGKILL,
power loss) can leave a hidden ``.{name}.XXXXXXXX.tmp…`` file behind.

Temporary names come from :mod:`tempfile` and are created exclusively (``O_EXCL``), so two
processes writing into one folder (DataLoader workers filling a cache, two runs) never share a
temporary file; when both write the same target, the last rename wins and every reader still sees
one whole version.

Installed files and folders get the permissions a plain ``open(path, "w")`` or ``mkdir`` would give
them (0o666 or 0o777 less the umask), not the 0o600 / 0o700 of ``mkstemp`` / ``mkdtemp``.

Standard library only (no NumPy, no torch): every layer and package may use it.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp"  # every temporary name ends with this, or with this plus the target's suffix


def _umask() -> int:
    """The process umask. Read from /proc where it can be: :func:`os.umask` is the only portable
    reader, and it changes the mask for a moment, which another thread creating a file could see."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(target: str | os.PathLike, *, keep_suffix: bool = True) -> Path:
    """Create a new empty file ``.{name}.XXXXXXXX.tmp{suffix}`` in ``target``'s folder and return it.

    ``keep_suffix`` keeps the target's last suffix at the end of the name (``.scene.tif.k2j4x9aq.tmp.tif``)
    so drivers that choose a format by extension (GDAL, pyarrow, ``np.save``) still work; without it
    the name ends in ``.tmp``. The leading dot hides the file from listings. The caller owns the
    file: it is installed with :func:`publish` or deleted by the caller (see :func:`atomic_path`).
    """
    target = Path(target)
    suffix = TEMP_MARK + target.suffix if keep_suffix else TEMP_MARK
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(name)


def publish(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename the finished temporary file ``tmp`` onto ``target`` (atomic on one file system) with the
    permissions of a newly created file (0o666 less the umask); returns ``target`` as a Path."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)
    return Path(target)


@contextmanager
def atomic_path(target: str | os.PathLike, *, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` to write; on success it replaces ``target``.

    ``with atomic_path(out) as tmp: write(tmp)``. The temporary file exists (empty) when the block
    starts, which reserves its unique name; writers that refuse an existing file may delete it
    first. When the block ends normally the file is :func:`publish`-ed onto ``target``; when it
    raises (anything, ``KeyboardInterrupt`` included) the file is deleted and the exception
    propagates, ``target`` left as it was. ``keep_suffix``: see :func:`temp_beside`.
    """
    tmp = temp_beside(target, keep_suffix=keep_suffix)
    try:
        yield tmp
        publish(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(target: str | os.PathLike, write: Callable[[Path], None], *, keep_suffix: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``target``, then put it in place atomically
    (:func:`atomic_path`); returns ``target`` as a Path."""
    with atomic_path(target, keep_suffix=keep_suffix) as tmp:
        write(tmp)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically (:func:`atomic_path`); returns ``target`` as a Path."""
    return write_atomic(target, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically (:func:`atomic_path`); returns ``target`` as a Path."""
    return write_atomic(target, lambda tmp: tmp.write_bytes(data))


@contextmanager
def staging_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty hidden folder beside ``target`` to fill; on success it becomes ``target``.

    ``with staging_dir(out) as folder: write_files(folder)``. When the block ends normally the folder
    gets the permissions of a new folder (0o777 less the umask) and is renamed to ``target``: a
    reader sees no folder or the whole new one, never a folder being filled. When ``target``
    already exists (a folder or a file) it is replaced: it is first renamed to a hidden name beside
    it, the new folder is renamed into place, and the old one is then deleted; between the two
    renames ``target`` is briefly absent, but never a mix of old and new files. (If the second
    rename fails, the old ``target`` is put back.) When the block raises (anything,
    ``KeyboardInterrupt`` included) the staging folder is deleted with its contents, ``target`` is
    left as it was and the exception propagates.
    """
    target = Path(target)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_MARK, dir=target.parent))
    try:
        yield folder
        os.chmod(folder, 0o777 & ~_umask())
        _rename_over(folder, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _rename_over(folder: Path, target: Path) -> None:
    """Rename ``folder`` to ``target``, moving an existing ``target`` aside first and deleting it after."""
    if not (target.exists() or target.is_symlink()):
        os.rename(folder, target)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", suffix=TEMP_MARK, dir=target.parent))
    old = trash / target.name
    try:
        os.rename(target, old)
    except BaseException:
        trash.rmdir()
        raise
    try:
        os.rename(folder, target)
    except BaseException:
        os.rename(old, target)  # put the old one back; should that fail too, it stays in ``trash``
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


def json_text(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``value`` as strict JSON text (indent 2, a final newline) that every JSON reader accepts:
    NaN and ±infinity, which :func:`json.dumps` writes as the invalid tokens ``NaN`` and
    ``Infinity``, become ``null``. ``default`` converts objects JSON does not know (as in json.dumps)."""
    plain = json.loads(json.dumps(value, default=default))  # NaN survives this round trip as float nan
    return json.dumps(_finite_or_none(plain), indent=2, allow_nan=False) + "\n"


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_json_atomic(target: str | os.PathLike, value: Any,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``value`` as strict JSON (:func:`json_text`) to ``target`` atomically; returns it as a Path."""
    return write_text_atomic(target, json_text(value, default))
