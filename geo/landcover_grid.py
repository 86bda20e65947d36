"""The land-cover product's grid: the input's own pixel grid (or an integer multiple of it),
within the input's extent.

Land cover is predicted and blended per *model pixel* (:mod:`geo.blend`): ``m = step / stride``
source pixels per model pixel on each axis, a grid that is in general on no grid of the input
(1.38 m imagery read by a 1.0 m model gives 0.72 source pixels per model pixel) and covers whole
tile cells, so it reaches past the input's right and bottom edges. ``landcover.tif`` is resampled
from that grid onto the *output grid*:

- ``k = max(1, floor(m))`` source pixels per output pixel on each axis: the input's resolution, or
  the coarsest integer multiple of it that is not coarser than the model's pixel (so no detail the
  model drew is thrown away, and every output pixel edge is an input pixel edge);
- ``shape = (ceil(height / k_y), ceil(width / k_x))`` and ``transform = input transform @
  scale(k_x, k_y)``: with ``k = 1`` exactly the input's extent; with ``k > 1`` the last row or
  column reaches past the edge by less than one output pixel (fewer than ``k`` input pixels) when
  ``k`` does not divide the input's size;
- nearest neighbour: output pixel ``(i, j)`` takes the model pixel under its centre, model row
  ``floor((i + 0.5) k_y / m_y)`` and column ``floor((j + 0.5) k_x / m_x)`` (class ids are not
  averaged; where ``k = 1`` and ``m < 1`` the input is coarser than the model and each output
  pixel takes the model pixel at its centre).

The resampling reads and writes strips of :data:`STRIP_ROWS` output rows, never the whole map.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geo.cog import StagedRaster
from geo.grid import TileGrid

STRIP_ROWS = 512  # output rows resampled at a time
EPS = 1e-9  # absorbs float error in m, so m = 2.0 computed as 1.9999999 still gives k = 2


def model_pixel(grid: TileGrid) -> tuple[float, float]:
    """Source pixels per model pixel of the blended land cover, ``step / stride`` (x, y)."""
    return (grid.step[0] / grid.stride, grid.step[1] / grid.stride)


def output_factor(grid: TileGrid) -> tuple[int, int]:
    """Source pixels per land-cover output pixel, ``k = max(1, floor(m))`` (x, y)."""
    return tuple(max(1, math.floor(m + EPS)) for m in model_pixel(grid))  # type: ignore[return-value]


def output_shape(grid: TileGrid) -> tuple[int, int]:
    """(rows, cols) of ``landcover.tif``: ``ceil(height / k_y), ceil(width / k_x)``."""
    kx, ky = output_factor(grid)
    return (math.ceil(grid.height / ky), math.ceil(grid.width / kx))


def output_transform(grid: TileGrid) -> Affine:
    """Affine of ``landcover.tif``: the input's transform ``@ scale(k_x, k_y)``."""
    return grid.transform @ Affine.scale(*output_factor(grid))


def output_gsd(grid: TileGrid) -> tuple[float, float]:
    """Metres per land-cover output pixel (x, y): ``source_gsd * k``."""
    kx, ky = output_factor(grid)
    return (grid.source_gsd[0] * kx, grid.source_gsd[1] * ky)


def source_index(n: int, start: int, k: int, m: float, limit: int) -> np.ndarray:
    """Model-grid indices under the centres of output pixels ``start .. start + n - 1`` on one
    axis, ``floor((i + 0.5) k / m)``, clipped to ``[0, limit)``."""
    centres = (np.arange(start, start + n, dtype=np.float64) + 0.5) * k
    return np.clip(np.floor(centres / m + EPS).astype(np.int64), 0, limit - 1)


def regrid(model_raster: str | Path, out: StagedRaster, grid: TileGrid) -> StagedRaster:
    """Resample the sealed model-pixel land cover ``model_raster`` onto the output grid of ``grid``
    into ``out`` (a StagedRaster of :func:`output_shape` with :func:`output_transform`), strip by
    strip; returns ``out`` sealed."""
    (mx, my), (kx, ky) = model_pixel(grid), output_factor(grid)
    rows, cols = output_shape(grid)
    with rasterio.open(model_raster) as src:
        col_index = source_index(cols, 0, kx, mx, src.width)
        for top in range(0, rows, STRIP_ROWS):
            row_index = source_index(min(STRIP_ROWS, rows - top), top, ky, my, src.height)
            first, last = int(row_index[0]), int(row_index[-1])
            block = src.read(1, window=Window(0, first, src.width, last - first + 1))
            out.write(block[np.ix_(row_index - first, col_index)], top)
    out.seal()
    return out
