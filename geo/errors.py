"""The one error type of geo/: a raster that cannot be read or mapped."""
from __future__ import annotations


class RasterError(ValueError):
    """A raster that cannot be used; the one-line message starts with the file and names the problem."""
