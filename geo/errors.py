"""The one error type of geo/: a raster, or a mapping option, that cannot be read or mapped."""
from __future__ import annotations

from model.core.errors import GeoaudioError


class RasterError(GeoaudioError, ValueError):
    """A raster that cannot be used; the one-line message starts with the file and names the problem."""
