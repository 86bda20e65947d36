"""The one error the synthetic-world writers raise on bad input."""
from __future__ import annotations

from model.core.errors import GeoaudioError


class SynthError(GeoaudioError, ValueError):
    """Bad input to a synthetic-world writer; the message names the path or option and the problem."""
