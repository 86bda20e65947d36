"""The one exception the dataset readers raise for bad input."""
from __future__ import annotations

from model.core.errors import GeoaudioError


class DatasetError(GeoaudioError, ValueError):
    """A dataset folder, file or option that cannot be used; the message names the path and the problem."""


class UnreadableItemError(DatasetError):
    """One item inside a dataset (an image, a recording, a mask) that cannot be read: left out of
    the set rather than stopping the run (:mod:`model.data.bad_items`)."""
