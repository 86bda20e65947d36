"""Real image tiles for calibration and parity checks: from a GeoTIFF or a folder of images.

- A GeoTIFF (or any raster rasterio opens) is cut into ``tile_size`` x ``tile_size`` pixel windows
  on a regular grid (``stride`` pixels apart, default one tile), read window by window, never whole.
  Bands: red/green/blue by colour interpretation, else bands 1-3. Windows with less than
  ``min_valid`` of their pixels valid (nodata, alpha or internal mask) are skipped. Non-8-bit data
  is stretched per band to 0-255 between its 2nd and 98th percentiles, estimated on a decimated
  read (at most 512 px a side) of valid pixels; a constant band is scaled by its dtype's range.
- An image file (JPEG, PNG ...) becomes one tile: the centred square crop resized to ``tile_size``.
- A folder contributes every raster and image file in it (sorted by name, not recursive).

``limit`` keeps that many tiles spread evenly over the source (every k-th), so a few tiles still
cover the whole scene.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from model.core.errors import GeoaudioError, one_line

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
STRETCH_PERCENTILES = (2.0, 98.0)
STATS_MAX_SIDE = 512  # pixels of the decimated read used to estimate the stretch


class CalibrationError(GeoaudioError, ValueError):
    """A calibration or parity source that gives no usable tiles; the message names it."""


def _rgb_bands(ds) -> list[int]:
    """1-based R, G, B band numbers of an open rasterio dataset."""
    from rasterio.enums import ColorInterp

    interp = list(ds.colorinterp)
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(interp.count(c) == 1 for c in wanted):
        return [interp.index(c) + 1 for c in wanted]
    if ds.count >= 3:
        return [1, 2, 3]
    raise CalibrationError(f"{ds.name}: {ds.count} band(s); need at least 3 (RGB)")


def _stretch(ds, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-band (low, high) for a 0-255 stretch, or None for 8-bit data (used as it is)."""
    from rasterio.enums import Resampling

    if all(ds.dtypes[b - 1] == "uint8" for b in bands):
        return None
    f = max(1, int(np.ceil(max(ds.width, ds.height) / STATS_MAX_SIDE)))
    shape = (len(bands), max(1, ds.height // f), max(1, ds.width // f))
    data = ds.read(list(bands), out_shape=shape, resampling=Resampling.nearest).astype(np.float64)
    valid = ds.dataset_mask(out_shape=shape[1:], resampling=Resampling.nearest) > 0
    if not valid.any():
        raise CalibrationError(f"{ds.name}: every pixel is nodata")
    lo, hi = np.percentile(data[:, valid], STRETCH_PERCENTILES, axis=1)
    flat = hi <= lo  # a constant band: scale by the dtype's range instead
    if flat.any():
        top = float(np.iinfo(ds.dtypes[bands[0] - 1]).max) if np.issubdtype(ds.dtypes[bands[0] - 1], np.integer) else 1.0
        lo, hi = np.where(flat, 0.0, lo), np.where(flat, top, hi)
    return lo, hi


def _to_uint8(data: np.ndarray, stretch: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """(3, h, w) band data -> (h, w, 3) uint8: 255 * (v - low) / (high - low), clipped."""
    if stretch is not None:
        lo, hi = stretch
        data = np.clip((data.astype(np.float64) - lo[:, None, None]) / (hi - lo)[:, None, None] * 255.0, 0, 255)
    return np.ascontiguousarray(np.rint(data).astype(np.uint8).transpose(1, 2, 0))


def _windows(width: int, height: int, tile_size: int, stride: int) -> list[tuple[int, int]]:
    """(col, row) offsets of every whole tile on a grid ``stride`` pixels apart."""
    cols = range(0, width - tile_size + 1, stride)
    rows = range(0, height - tile_size + 1, stride)
    return [(c, r) for r in rows for c in cols]


def _spread(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced over the sequence (all of them when None)."""
    if limit is None or len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


def raster_tiles(path: str | os.PathLike, tile_size: int, limit: int | None = None, stride: int | None = None,
                 min_valid: float = 0.9) -> np.ndarray:
    """uint8 tiles (N, tile_size, tile_size, 3) cut from a raster (rules in the module doc)."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    path = Path(path)
    stride = int(stride or tile_size)
    if tile_size < 1 or stride < 1:
        raise CalibrationError(f"{path}: tile size and stride must be positive, got {tile_size}, {stride}")
    try:
        with rasterio.open(path) as ds:
            bands = _rgb_bands(ds)
            offsets = _windows(ds.width, ds.height, tile_size, stride)
            if not offsets:
                raise CalibrationError(f"{path}: {ds.width}x{ds.height} px is smaller than one "
                                       f"{tile_size} px tile")
            stretch = _stretch(ds, bands)
            tiles = []
            for col, row in offsets:
                window = Window(col, row, tile_size, tile_size)
                if (ds.dataset_mask(window=window) > 0).mean() < min_valid:
                    continue
                tiles.append(_to_uint8(ds.read(bands, window=window), stretch))
    except RasterioError as e:
        raise CalibrationError(f"{path}: cannot read raster ({one_line(e)})") from None
    if not tiles:
        raise CalibrationError(f"{path}: no {tile_size} px tile has {min_valid:.0%} valid pixels")
    return np.stack(_spread(tiles, limit))


def image_tile(path: str | os.PathLike, tile_size: int) -> np.ndarray:
    """One uint8 tile (tile_size, tile_size, 3): an image's centred square crop, resized (bilinear)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise CalibrationError(f"{path}: cannot read image ({one_line(e)})") from None
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((tile_size, tile_size), Image.BILINEAR), dtype=np.uint8)


def _folder_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES + IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"{path}: folder holds no images or rasters "
                               f"({', '.join(RASTER_SUFFIXES + IMAGE_SUFFIXES)})")
    return files


def load_tiles(source: str | os.PathLike, tile_size: int, limit: int | None = None,
               stride: int | None = None) -> np.ndarray:
    """uint8 tiles (N, tile_size, tile_size, 3) from a raster, an image file or a folder of them."""
    path = Path(source)
    if not path.exists():
        raise CalibrationError(f"{path}: no such file or folder")
    files = _folder_files(path) if path.is_dir() else [path]
    tiles = []
    for f in files:
        if f.suffix.lower() in IMAGE_SUFFIXES:
            tiles.append(image_tile(f, tile_size)[None])
        else:
            tiles.append(raster_tiles(f, tile_size, stride=stride))
    return np.stack(_spread(list(np.concatenate(tiles)), limit))


def load_many(sources: Iterable[str | os.PathLike], tile_size: int, limit_each: int | None = None,
              stride: int | None = None) -> np.ndarray:
    """Tiles of several sources, concatenated in order (``limit_each`` per source)."""
    parts = [load_tiles(s, tile_size, limit_each, stride) for s in sources]
    if not parts:
        raise CalibrationError("no tile sources given")
    return np.concatenate(parts)


def split_holdout(tiles: np.ndarray, holdout: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, held-out) tiles: a seeded random ``holdout`` fraction (at least one tile) kept apart."""
    if len(tiles) < 2:
        raise CalibrationError(f"need at least 2 tiles to hold some out, got {len(tiles)}")
    order = np.random.default_rng(seed).permutation(len(tiles))
    n_out = min(len(tiles) - 1, max(1, int(round(len(tiles) * holdout))))
    return tiles[order[n_out:]], tiles[order[:n_out]]
