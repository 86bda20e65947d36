"""Reading model tiles from an open raster: one GDAL read per run of neighbouring tiles.

A tile is a source window resampled to ``tile_size`` x ``tile_size`` model pixels ("average" when
downsampling, "bilinear" when upsampling, "nearest" at 1:1; masks always "nearest"). Model pixels
not wholly inside the raster, or whose mask says nodata / transparent, or with non-finite values
are invalid and set to 0.

Tiles of one cell row sit on one lattice of model pixels when the offset between neighbours,
``d = step * tile_size / size`` model pixels (``step`` source pixels between cells, ``size``
source pixels per tile), is a whole number: always with the default stride (``d = tile_size``),
and for overlapping strides that divide evenly. Such a run of ``n`` tiles is read with **one**
GDAL read of the union window, ``(n - 1) * step + size`` source pixels wide, into
``(n - 1) * d + tile_size`` model pixels, and cut into tiles; GDAL picks the same overview and
computes every model pixel from the same source footprint as a read per tile would (its kernels
read past a window's edge where the raster continues), so the pixels are the same (tested in
tests/geo/test_tile_read.py). One exception: an overview whose size was rounded (a raster of 203 px
with a 1/2 overview of 102 px) maps each window to fractional overview pixels that GDAL rounds
per read, so there a downsampling read goes tile by tile, as before, to keep the products the same. A run is capped at ``MAX_READ_PIXELS`` source pixels per read, so a
very wide raster is read in several pieces and memory stays bounded. Tiles that share no lattice
are read one by one.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from geo.grid import Tile
from geo.scaling import Scaling, apply, valid_pixels

if TYPE_CHECKING:  # pragma: no cover
    from geo.raster import RasterSource

EDGE_EPS = 1e-6  # model pixels; absorbs float error when locating the raster edge inside a tile
MAX_READ_PIXELS = 16 * 1024 * 1024  # source pixels per band in one read of a run of tiles


def read_tile(src: "RasterSource", window: Window | Tile, tile_size: int,
              scaling: Scaling | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One model tile: ``rgb`` uint8 (tile_size, tile_size, 3) and ``valid`` bool (tile_size, tile_size)
    from the source ``window`` (pixels; may reach outside the raster). Values go through ``scaling``
    (default: the source's own, see :mod:`geo.scaling`)."""
    w = window.window if isinstance(window, Tile) else window
    _check(w, tile_size)
    rgb, valid = read_window(src, w, (tile_size, tile_size), scaling)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0)), valid


def read_tiles(src: "RasterSource", windows: Iterable[Window | Tile], tile_size: int,
               scaling: Scaling | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A batch of tiles: ``rgb`` uint8 (n, tile_size, tile_size, 3) and ``valid`` bool
    (n, tile_size, tile_size), read run by run (:func:`lattice_runs`, one GDAL read each)."""
    scaling = src.scaling if scaling is None else scaling
    found = [w.window if isinstance(w, Tile) else w for w in windows]
    rgb = np.zeros((len(found), tile_size, tile_size, 3), np.uint8)
    valid = np.zeros((len(found), tile_size, tile_size), bool)
    for w in found:
        _check(w, tile_size)
    runs = (lattice_runs(found, tile_size) if _runs_exact(src, found, tile_size)
            else [(i, i + 1, 0) for i in range(len(found))])
    for start, stop, d in runs:
        _read_run(src, found[start:stop], d, tile_size, scaling, rgb[start:stop], valid[start:stop])
    return rgb, valid


def lattice_runs(windows: Sequence[Window], tile_size: int,
                 max_pixels: int = MAX_READ_PIXELS) -> list[tuple[int, int, int]]:
    """``(start, stop, d)`` runs of consecutive windows that one read can serve: same size and row
    offset, column offsets ``step`` apart with ``d = step * tile_size / width`` a whole number of
    model pixels (``d = 0`` for a run of one), and at most ``max_pixels`` source pixels together."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    while start < len(windows):
        stop, d = start + 1, 0
        first = windows[start]
        while stop < len(windows):
            d_next = _lattice_step(windows[stop - 1], windows[stop], tile_size)
            if d_next is None or (d and d_next != d):
                break
            span = (windows[stop].col_off - first.col_off + first.width) * first.height
            if span > max_pixels:
                break
            stop, d = stop + 1, d_next
        runs.append((start, stop, d))
        start = stop
    return runs


def _runs_exact(src: "RasterSource", windows: Sequence[Window], tile_size: int) -> bool:
    """Whether runs read the same pixels as single tiles: always, unless downsampling may use an
    overview whose size was rounded (module doc)."""
    downsampling = any(w.width > tile_size or w.height > tile_size for w in windows)
    return src.overviews_exact or not downsampling


def _lattice_step(a: Window, b: Window, tile_size: int) -> int | None:
    """Model pixels from window ``a`` to its right neighbour ``b`` when both lie on one lattice, else None."""
    if (a.width, a.height, a.row_off) != (b.width, b.height, b.row_off):
        return None
    step = b.col_off - a.col_off
    if step <= 0:
        return None
    d = step * tile_size / a.width
    return int(d) if float(d).is_integer() else None


def _read_run(src: "RasterSource", windows: Sequence[Window], d: int, tile_size: int, scaling: Scaling,
              rgb: np.ndarray, valid: np.ndarray) -> None:
    """Read a lattice run with one read of the union window and cut it into ``rgb`` / ``valid``."""
    first, n = windows[0], len(windows)
    union = Window(first.col_off, first.row_off, windows[-1].col_off - first.col_off + first.width, first.height)
    width = (n - 1) * d + tile_size
    strip, strip_valid = read_window(src, union, (tile_size, width), scaling)
    for i in range(n):
        rgb[i] = strip[:, :, i * d:i * d + tile_size].transpose(1, 2, 0)
        valid[i] = strip_valid[:, i * d:i * d + tile_size]


def read_window(src: "RasterSource", window: Window, out_shape: tuple[int, int],
                scaling: Scaling | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source ``window`` (may reach outside the raster) resampled to ``out_shape`` = (rows, cols) model
    pixels: ``rgb`` uint8 (3, rows, cols) and ``valid`` bool (rows, cols) (rules in the module doc)."""
    rows, cols = out_shape
    rgb = np.zeros((3, rows, cols), np.uint8)
    valid = np.zeros((rows, cols), bool)
    part = inside_part(window, src.width, src.height, out_shape)
    if part is None:
        return rgb, valid
    (r0, r1, c0, c1), inner = part
    shape = (3, r1 - r0, c1 - c0)
    where = f" in window col {window.col_off:g}, row {window.row_off:g}, {window.width:g}x{window.height:g}"
    ds, bands = src.dataset, list(src.bands)
    how = _resampling(window, out_shape)
    data = src.guarded_read(lambda: ds.read(bands, window=inner, out_shape=shape, resampling=how), where)
    scaled = apply(src.scaling if scaling is None else scaling, data)
    if src.all_valid and not np.issubdtype(data.dtype, np.floating):
        rgb[:, r0:r1, c0:c1] = scaled
        valid[r0:r1, c0:c1] = True
    else:
        masks = src.guarded_read(lambda: ds.read_masks(bands, window=inner, out_shape=shape,
                                                       resampling=Resampling.nearest), where)
        ok = valid_pixels(data, masks)
        rgb[:, r0:r1, c0:c1] = np.where(ok, scaled, 0)
        valid[r0:r1, c0:c1] = ok
    return rgb, valid


def inside_part(window: Window, width: int, height: int,
                out_shape: int | tuple[int, int]) -> tuple[tuple[int, int, int, int], Window] | None:
    """The model pixels of a window lying wholly inside the raster and the source window they read.

    ``out_shape``: model pixels (rows, cols), or one number for a square tile. Model pixel j along
    an axis covers source ``[off + j * s, off + (j + 1) * s)`` with ``s = window size / model
    pixels``; the inside ones are ``ceil(-off / s) <= j < floor((n - off) / s)``. Returns
    ((row0, row1, col0, col1), source window) or None when no model pixel is inside.
    """
    rows_out, cols_out = (out_shape, out_shape) if isinstance(out_shape, int) else out_shape
    cols = _inside_span(window.col_off, window.width, width, cols_out)
    rows = _inside_span(window.row_off, window.height, height, rows_out)
    if cols is None or rows is None:
        return None
    (c0, c1, x0, x1), (r0, r1, y0, y1) = cols, rows
    return (r0, r1, c0, c1), Window(x0, y0, x1 - x0, y1 - y0)


def _inside_span(off: float, size: float, n: int, out: int) -> tuple[int, int, float, float] | None:
    """(first, end) model pixels inside [0, n) along one axis, and their source span (clipped)."""
    s = size / out
    j0 = max(0, math.ceil(-off / s - EDGE_EPS))
    j1 = min(out, math.floor((n - off) / s + EDGE_EPS))
    if j1 <= j0:
        return None
    return j0, j1, max(0.0, off + j0 * s), min(float(n), off + j1 * s)


def _resampling(window: Window, out_shape: tuple[int, int]) -> Resampling:
    """average when the window has more source pixels than model pixels, bilinear when fewer, else nearest."""
    rows, cols = out_shape
    if window.width > cols or window.height > rows:
        return Resampling.average
    if window.width < cols or window.height < rows:
        return Resampling.bilinear
    return Resampling.nearest


def _check(window: Window, tile_size: int) -> None:
    if int(tile_size) != tile_size or tile_size < 1:
        raise ValueError(f"tile_size must be a positive whole number of pixels, got {tile_size}")
    if not (window.width > 0 and window.height > 0):
        raise ValueError(f"window must have a positive size, got {window}")
