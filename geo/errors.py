"""The error types of geo/: a raster or mapping option that cannot be used, a product that cannot be
written, a run that will not fit on the disk, an output folder another run is mapping, a query that
cannot be answered."""
from __future__ import annotations

from model.core.errors import GeoaudioError


class RasterError(GeoaudioError, ValueError):
    """A raster that cannot be used; the one-line message starts with the file and names the problem."""


class WriteError(GeoaudioError, OSError):
    """A file that could not be written whole (disk full, I/O error reported by GDAL, libtiff,
    SQLite or the read-back check); the one-line message names the file, the reason and the free space."""


class NoSpaceError(GeoaudioError, OSError):
    """A run refused before it starts: its estimated writes exceed the free space of its output folder."""


class FolderBusyError(GeoaudioError, BlockingIOError):
    """An output folder locked by another running mapping process (named by PID and host)."""


class QueryError(GeoaudioError, ValueError):
    """A query that cannot be answered; the one-line message names the file or the problem."""
