"""The one exception the dataset readers raise for bad input."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset folder, file or option that cannot be used; the message names the path and the problem."""
