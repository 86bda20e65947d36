"""Dtype scaling: turn any raster's pixel values into the model's 0-255 uint8 range.

For a band with stretch limits ``low`` and ``high`` (in the raster's own units, e.g. digital
numbers or reflectance), a value ``x`` becomes

    ``uint8(round(clip((x - low) / (high - low), 0, 1) * 255))``

uint8 rasters are used as they are (``method="identity"``). Every other dtype (uint16, int16,
float32, ...) is stretched between per-band percentiles (default 2 % and 98 %) of the valid pixels
of a small, cheap view of the whole scene: the smallest overview that still has at least
``MIN_OVERVIEW_PIXELS`` pixels (``source="overview"``) or, without one, a nearest-neighbour
decimated read of at most ``SAMPLE_LONG_SIDE`` pixels on the long side (``source="sample"``).
Neither reads the full-resolution raster.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from rasterio.enums import Resampling

if TYPE_CHECKING:  # pragma: no cover
    from geo.raster import RasterSource

MIN_OVERVIEW_PIXELS = 256 * 256  # an overview must hold at least this many pixels to be sampled
SAMPLE_LONG_SIDE = 1024  # pixels on the long side of a decimated sample
MASK_VALID = 1  # GDAL mask values (0-255): 0 is invalid, anything above is valid (GDAL convention;
# a uint16 alpha of 0-255 is rescaled by 1/257 to a 0-1 mask, so no higher threshold is safe)
METHODS = ("identity", "percentile")
SOURCES = ("identity", "overview", "sample")


@dataclass(frozen=True)
class Scaling:
    """Per-band linear stretch limits ``low``/``high`` (raster units) and how they were found.

    ``method`` is "identity" (uint8, no stretch) or "percentile"; ``source`` is "identity",
    "overview" or "sample"; ``percentiles`` the (low, high) percentiles used; ``pixels`` the number
    of valid pixels the statistics came from (0 when the scene has none: then the limits fall back
    to the dtype's range, 0-1 for floats).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    method: str = "percentile"
    source: str = "sample"
    percentiles: tuple[float, float] = (2.0, 98.0)
    pixels: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"scaling method must be one of {METHODS}, got {self.method!r}")
        if self.source not in SOURCES:
            raise ValueError(f"scaling source must be one of {SOURCES}, got {self.source!r}")
        if len(self.low) != len(self.high):
            raise ValueError(f"scaling has {len(self.low)} low limits but {len(self.high)} high limits")

    @classmethod
    def identity(cls, n_bands: int = 3) -> "Scaling":
        """The uint8 pass-through: low 0, high 255 for every band."""
        return cls((0.0,) * n_bands, (255.0,) * n_bands, "identity", "identity", (0.0, 100.0), 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (for run.json)."""
        d = asdict(self)
        d["low"], d["high"], d["percentiles"] = list(self.low), list(self.high), list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scaling":
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(map(float, d["low"])), tuple(map(float, d["high"])), d["method"], d["source"],
                   tuple(map(float, d["percentiles"])), int(d["pixels"]))


def apply(scaling: Scaling, array: np.ndarray) -> np.ndarray:
    """Stretch a band-first array ``(bands, ...)`` to uint8 with clipping (formula in the module doc).

    NaN and other non-finite values become 0; callers mark them invalid separately.
    """
    if array.shape[0] != len(scaling.low):
        raise ValueError(f"array has {array.shape[0]} bands, scaling has {len(scaling.low)}")
    if scaling.method == "identity" and array.dtype == np.uint8:
        return array  # already 0-255: nothing to stretch, clip or replace
    x = np.asarray(array, dtype=np.float32)
    if scaling.method == "identity":
        y = x
    else:
        shape = (-1,) + (1,) * (x.ndim - 1)
        low = np.asarray(scaling.low, np.float32).reshape(shape)
        span = np.asarray(scaling.high, np.float32).reshape(shape) - low
        y = (x - low) / span * 255.0
    y = np.nan_to_num(y, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def valid_pixels(data: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Validity of each pixel of band-first ``data`` given GDAL ``masks`` (same shape, 0-255).

    A pixel is valid when at least one band's mask is >= ``MASK_VALID`` (GDAL's dataset-mask rule:
    nodata only where every band is nodata; alpha and internal masks are shared by all bands) and
    every band's value is finite.
    """
    valid = np.any(masks >= MASK_VALID, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.all(np.isfinite(data), axis=0)
    return valid


def estimate_scaling(src: "RasterSource", bands: Sequence[int] | None = None,
                     percentiles: tuple[float, float] = (2.0, 98.0)) -> Scaling:
    """Stretch limits for ``bands`` (1-based; default ``src.bands``) of an open :class:`RasterSource`.

    uint8 gives the identity; other dtypes give per-band ``percentiles`` of the valid pixels of the
    smallest overview with >= ``MIN_OVERVIEW_PIXELS`` pixels, else of a decimated sample.
    """
    bands = tuple(src.bands if bands is None else bands)
    ds = src.dataset
    if np.dtype(ds.dtypes[bands[0] - 1]) == np.uint8:
        return Scaling.identity(len(bands))
    lo_p, hi_p = float(percentiles[0]), float(percentiles[1])
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    shape, source = _statistics_shape(ds.width, ds.height, ds.overviews(bands[0]))
    out_shape = (len(bands),) + shape
    data = src.guarded_read(lambda: ds.read(bands, out_shape=out_shape, resampling=Resampling.nearest))
    masks = src.guarded_read(lambda: ds.read_masks(bands, out_shape=out_shape, resampling=Resampling.nearest))
    valid = valid_pixels(data, masks)
    n = int(valid.sum())
    if n == 0:
        low, high = _dtype_range(data.dtype)
        return Scaling((low,) * len(bands), (high,) * len(bands), "percentile", source, (lo_p, hi_p), 0)
    lows, highs = [], []
    for band in data:
        lo, hi = np.percentile(band[valid].astype(np.float64), [lo_p, hi_p])
        if hi <= lo:  # a constant band: show it mid-grey instead of dividing by zero
            lo, hi = lo - 0.5, lo + 0.5
        lows.append(float(lo))
        highs.append(float(hi))
    return Scaling(tuple(lows), tuple(highs), "percentile", source, (lo_p, hi_p), n)


def _statistics_shape(width: int, height: int, overview_factors: Sequence[int]) -> tuple[tuple[int, int], str]:
    """(rows, cols) to read for statistics and whether that is an "overview" or a "sample".

    The smallest overview (largest decimation factor f, size ceil(height / f) x ceil(width / f))
    holding >= MIN_OVERVIEW_PIXELS; otherwise the whole raster scaled so its long side is at most
    SAMPLE_LONG_SIDE (GDAL reads just the pixels it needs for a nearest-neighbour decimation).
    """
    for f in sorted(overview_factors, reverse=True):
        rows, cols = math.ceil(height / f), math.ceil(width / f)
        if rows * cols >= MIN_OVERVIEW_PIXELS:
            return (rows, cols), "overview"
    step = max(1.0, max(width, height) / SAMPLE_LONG_SIDE)
    return (max(1, round(height / step)), max(1, round(width / step))), "sample"


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    """Fallback stretch when no pixel is valid: the integer dtype's full range, or 0-1 for floats."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0
