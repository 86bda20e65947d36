"""The one exception the dataset readers raise for bad input."""
from __future__ import annotations

from model.core.errors import GeoaudioError


class DatasetError(GeoaudioError, ValueError):
    """A dataset folder, file or option that cannot be used; the message names the path and the problem."""
