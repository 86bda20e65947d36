"""GDAL's and libtiff's messages, routed through one handler, and write errors as one line.

Where the messages go without this module:

- GDAL reports every problem through its error handler. Inside a ``rasterio.Env`` rasterio hands
  them to Python logging (failures as ``GDAL signalled an error: ...`` records at INFO on the
  ``rasterio._env`` / ``rasterio._err`` loggers) and raises an exception when the call itself
  fails. Outside an Env (a writer thread, a dataset closed later) GDAL's default handler prints
  ``ERROR 1: ...`` on stderr instead, and a write that fails while a dataset is *closed* is only
  printed: ``close()`` returns normally over a truncated file.
- libtiff prints the system error of a failed write or seek (``_tiffWriteProc: No space left on
  device.``) through its own global handler, straight to stderr, bypassing GDAL.

With :func:`route_messages` (done by :func:`gdal_errors`, once per process): libtiff's global
error handler forwards to the ``geo.gdal`` logger (at INFO), and a logging filter on those three
loggers hands failure records to the :func:`gdal_errors` blocks running in the same thread, then
drops them (they are never printed; ``GEOAUDIO_DEBUG=1`` keeps them in logging). Other records
(warnings) pass on unchanged.

``with gdal_errors(path): write(...)`` runs the block in a ``rasterio.Env`` and turns a failure
into one :class:`geo.errors.WriteError` line, ``cannot write PATH: REASON (N MB free in
FOLDER)``, whether GDAL raised it (rasterio's exceptions) or only reported it (a failure record
collected from this thread). libtiff's system error comes first in REASON when there is one.

The libtiff hook uses ctypes on the libtiff loaded in the process (found in ``/proc/self/maps``);
where that is not available (not Linux, no libtiff loaded) libtiff's own messages stay on stderr
and everything else still works. It is undone at interpreter exit, before Python is torn down.
"""
from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from geo.errors import WriteError
from model.core.errors import one_line

FAILURE_PREFIX = "GDAL signalled an error"  # rasterio's log message for a GDAL CE_Failure
ROUTED_LOGGERS = ("rasterio._env", "rasterio._err", "geo.gdal")
LIBTIFF_LOGGER = "geo.gdal"
MESSAGE_BYTES = 1024  # longest libtiff message kept

_collectors: dict[int, list[list[str]]] = {}  # thread ident -> open gdal_errors blocks (innermost last)
_guard = threading.Lock()
_routed = False
_libtiff_hooks: list[Any] = []  # (library, our handler, previous handler), kept alive until exit


def route_messages() -> None:
    """Install the logging filter and the libtiff hook (see the module doc); idempotent."""
    global _routed
    with _guard:
        if _routed:
            return
        _routed = True
    keep = bool(os.environ.get("GEOAUDIO_DEBUG"))
    for name in ROUTED_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:  # failures are INFO records: let them be made
            logger.setLevel(logging.INFO)
        logger.addFilter(lambda record: not _claim(record) or keep)
    _hook_libtiff()


def _claim(record: logging.LogRecord) -> bool:
    """Hand a failure record to this thread's innermost open block; True when the record was a
    failure (the filter then drops it), False to let it pass."""
    text = record.getMessage()
    failure = record.name == LIBTIFF_LOGGER or text.startswith(FAILURE_PREFIX)
    if failure:
        with _guard:
            blocks = _collectors.get(record.thread or 0)
            if blocks:
                blocks[-1].append(_plain(text))
    return failure


def _plain(text: str) -> str:
    """``GDAL signalled an error: err_no=1, msg='X'`` -> ``X``; other messages unchanged."""
    marker = "msg="
    if text.startswith(FAILURE_PREFIX) and marker in text:
        return text.split(marker, 1)[1].strip().strip("'\"")
    return text


@contextmanager
def gdal_errors(target: str | os.PathLike) -> Iterator[list[str]]:
    """Run a write of ``target`` in a ``rasterio.Env``, collecting this thread's GDAL and libtiff
    failures (the yielded list); raise one :class:`WriteError` line when rasterio raised or any
    failure was reported (see the module doc). Other exceptions propagate unchanged."""
    route_messages()
    ident, messages = threading.get_ident(), []
    with _guard:
        _collectors.setdefault(ident, []).append(messages)
    try:
        with rasterio.Env():
            yield messages
    except (RasterioError, CPLE_BaseError) as e:
        raise WriteError(write_failure(target, messages or [one_line(e)])) from e
    finally:
        with _guard:
            _collectors[ident].remove(messages)
            if not _collectors[ident]:
                del _collectors[ident]
    if messages:
        raise WriteError(write_failure(target, messages))


def write_failure(target: str | os.PathLike, messages: list[str]) -> str:
    """``cannot write TARGET: REASON (N MB free in FOLDER)``: libtiff's system error first, then
    the first GDAL message; the free space of the nearest existing folder above ``target``."""
    libtiff = [m.removeprefix("libtiff: ") for m in messages if m.startswith("libtiff: ")]
    others = [m for m in messages if not m.startswith("libtiff: ")]
    reason = "; ".join(([libtiff[0]] if libtiff else []) + others[:1]) or "unknown error"
    return f"cannot write {target}: {reason}{free_space_note(target)}"


def free_space_note(target: str | os.PathLike) -> str:
    """`` (N MB free in FOLDER)`` for the nearest existing folder at or above ``target``; "" when
    it cannot be measured."""
    folder = Path(target).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" ({format_bytes(free)} free in {folder})"


def format_bytes(n: float) -> str:
    """Bytes as a short human figure in powers of 1024: ``812 B``, ``3.4 MB``, ``1.20 GB``."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.2f} {unit}" if unit == "GB" else f"{value:.1f} {unit}"
    return f"{int(n)} B"


# ---- libtiff's global error handler -> the geo.gdal logger --------------------------------------

_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


def _libtiff_paths() -> list[str]:
    """Paths of the libtiff shared libraries mapped into this process (Linux), else []."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libtiff" in line and ".so" in line}
    except OSError:
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith("libtiff") and os.path.isfile(p))


def _hook_libtiff() -> None:
    """Point libtiff's global error handler at :func:`_forward` (restored at exit)."""
    try:
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    except (OSError, AttributeError):
        return
    log = logging.getLogger(LIBTIFF_LOGGER)

    def forward(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
        buf = ctypes.create_string_buffer(MESSAGE_BYTES)
        if fmt:
            vsnprintf(buf, MESSAGE_BYTES, fmt, args)
        text = buf.value.decode("utf-8", "replace").strip().rstrip(".")
        log.info("libtiff: %s", text or (module or b"").decode("utf-8", "replace"))

    handler = _HANDLER(forward)
    for path in _libtiff_paths():
        try:
            lib = ctypes.CDLL(path)
            setter = lib.TIFFSetErrorHandler
        except (OSError, AttributeError):
            continue
        setter.restype, setter.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
        previous = setter(ctypes.cast(handler, ctypes.c_void_p))
        _libtiff_hooks.append((setter, handler, previous))
    if _libtiff_hooks:
        atexit.register(_unhook_libtiff)


def _unhook_libtiff() -> None:
    """Give libtiff its previous handlers back (datasets freed during interpreter shutdown must
    not call into Python)."""
    for setter, _handler, previous in _libtiff_hooks:
        setter(previous)
