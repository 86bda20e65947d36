"""Atomic, incrementally written cloud-optimised GeoTIFFs.

GDAL's COG driver can only copy a finished raster, so every product is written in two steps:

1. :class:`StagedRaster` opens an uncompressed, tiled GTiff staging file (``<name>.staging.tif``
   in the run's ``.partial/`` folder) and takes windows of rows as they are computed, so no product
   is ever held whole in memory (GDAL keeps at most its block cache, ``GDAL_CACHEMAX``).
   Uncompressed blocks are rewritten in place, so windows need not be block aligned; blocks never
   written read back as nodata.
2. :func:`cog_from_staging` (or :meth:`StagedRaster.to_cog`) copies it with the COG driver
   (DEFLATE, internal overviews built with ``nearest`` for class rasters and ``average`` for
   scores) into a hidden temporary file beside ``<name>``, reads that file back
   (:func:`check_readable`: every block of the full-resolution level, the last block of each
   overview) and only then renames it into place (:func:`model.core.atomic.atomic_path`): a reader
   sees either no file or a whole one.

Every write, close and copy runs under :func:`geo.gdal_log.gdal_errors`: a write error that GDAL
or libtiff only reports (a full disk while a dataset is closed) fails it as loudly as one that
rasterio raises, with one :class:`geo.errors.WriteError` line.

Colour tables, band descriptions, nodata, dataset tags and band metadata set on the staging file
are carried over by the copy (band metadata into the TIFF's ``GDAL_METADATA`` tag).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.windows import Window

from geo.errors import RasterError, WriteError
from geo.gdal_log import gdal_errors
from model.core.atomic import atomic_path

MAX_BLOCK = 256  # pixels per side of a block (staging file and COG) ...
MIN_BLOCK = 32  # ... halved down to this while one block holds more than BLOCK_BYTES
BLOCK_BYTES = 4 << 20  # bytes of one uncompressed block (all bands, pixel interleaved)
COLOR_ALPHA = 255  # colour-table entries are opaque


class StagedRaster:
    """A raster product written by windows into a staging GTiff, then published as a COG.

    ``dtype`` is a NumPy dtype name; ``nodata`` the value of cells without data (255 for class
    rasters, NaN for floats); ``descriptions`` one name per band; ``colors`` a colour table
    ``{value: (r, g, b)}`` for single-band class rasters; ``tags`` dataset metadata strings;
    ``band_tags`` metadata strings of band 1 (class names, :mod:`geo.class_names`).
    ``resume=True`` reopens the staging file that an interrupted run left (after :meth:`flush`)
    instead of creating it; RasterError when it is missing or differs in size, bands or dtype.
    """

    def __init__(self, path: str | os.PathLike, *, width: int, height: int, count: int, dtype: str,
                 transform: Affine, crs: Any, nodata: float, descriptions: Sequence[str],
                 colors: Mapping[int, Sequence[int]] | None = None,
                 tags: Mapping[str, str] | None = None, band_tags: Mapping[str, str] | None = None,
                 resume: bool = False) -> None:
        if len(descriptions) != count:
            raise ValueError(f"{path}: {count} bands but {len(descriptions)} descriptions")
        self.path = Path(path)
        self.staging = staging_path(self.path)
        self.dtype, self.nodata, self.count = np.dtype(dtype), nodata, count
        self.block = block_side(count, self.dtype.itemsize)
        if resume:
            self.dataset = self._reopen((height, width))
            return
        profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype,
                       transform=transform, crs=crs, nodata=nodata, tiled=True,
                       blockxsize=self.block, blockysize=self.block, sparse_ok=True,
                       interleave="pixel" if count > 1 else "band", BIGTIFF="IF_SAFER")
        with gdal_errors(self.staging):
            self.dataset = rasterio.open(self.staging, "w", **profile)
            for band, text in enumerate(descriptions, start=1):
                self.dataset.set_band_description(band, text)
            if colors:
                self.dataset.write_colormap(1, {int(v): (*map(int, rgb[:3]), COLOR_ALPHA) for v, rgb in colors.items()})
            if tags:
                self.dataset.update_tags(**{k: str(v) for k, v in tags.items()})
            if band_tags:
                self.dataset.update_tags(1, **{k: str(v) for k, v in band_tags.items()})

    def _reopen(self, shape: tuple[int, int]) -> Any:
        """The staging file opened for update, checked against the expected (rows, cols) ``shape``."""
        if not self.staging.is_file():  # rasterio raises TypeError for a missing file opened "r+"
            raise RasterError(f"{self.staging}: staging file missing")
        try:
            dataset = rasterio.open(self.staging, "r+")
        except (rasterio.errors.RasterioError, CPLE_BaseError) as e:
            raise RasterError(f"{self.staging}: cannot reopen the staging file ({e})") from None
        if dataset.shape != shape or dataset.count != self.count or np.dtype(dataset.dtypes[0]) != self.dtype:
            dataset.close()
            raise RasterError(f"{self.staging}: staging file does not match the product")
        return dataset

    def flush(self) -> None:
        """Make everything written so far complete on disk (GDAL writes the blocks and the TIFF
        directory on close), then reopen the file for update."""
        shape = self.dataset.shape
        self.seal()
        self.dataset = self._reopen(shape)

    def seal(self) -> None:
        """Close the staging file for good, its blocks and directory on disk; WriteError when GDAL
        or libtiff reported a write error on the way (``close()`` alone does not raise for those)."""
        if not self.dataset.closed:
            with gdal_errors(self.staging):
                self.dataset.close()

    def write(self, array: np.ndarray, row: int, col: int = 0) -> None:
        """Write ``array`` (bands, rows, cols) (or (rows, cols) for one band) with its top-left
        pixel at (``row``, ``col``); parts outside the raster are clipped away."""
        a = array[None] if array.ndim == 2 else array
        ds = self.dataset
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + a.shape[1], ds.height), min(col + a.shape[2], ds.width)
        if r1 <= r0 or c1 <= c0:
            return
        part = a[:, r0 - row:r1 - row, c0 - col:c1 - col]
        with gdal_errors(self.staging):
            ds.write(np.ascontiguousarray(part, dtype=self.dtype), window=Window(c0, r0, c1 - c0, r1 - r0))

    def to_cog(self, resampling: str = "nearest") -> Path:
        """Seal the staging file, copy it to the COG ``path`` atomically (:func:`cog_from_staging`),
        delete the staging file."""
        self.seal()
        cog_from_staging(self.staging, self.path, resampling)
        self.staging.unlink(missing_ok=True)
        return self.path

    def close(self) -> None:
        """Close the staging file and keep it (an interrupted run resumes from it, from its last
        flush); a write error on the way is not raised (the run is already stopping)."""
        try:
            self.seal()
        except WriteError:
            pass

    def discard(self) -> None:
        """Close and delete the staging file (after an error)."""
        self.close()
        self.staging.unlink(missing_ok=True)


def staging_path(path: str | os.PathLike) -> Path:
    """The staging file of product ``path``: ``<stem>.staging.tif`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + ".staging.tif")


def cog_from_staging(staging: str | os.PathLike, path: str | os.PathLike, resampling: str = "nearest") -> Path:
    """Copy a sealed staging GTiff to the COG ``path`` (see the module doc): written to a temporary
    file, read back whole (:func:`check_readable`), then renamed into place; the staging file is
    kept. WriteError (one line) when any step fails; ``path`` is then left as it was."""
    staging, path = Path(staging), Path(path)
    if not staging.is_file():
        raise RasterError(f"{staging}: staging file missing")
    with rasterio.open(staging) as src:
        count, dtype = src.count, np.dtype(src.dtypes[0])
    with atomic_path(path) as tmp:
        with gdal_errors(path):
            rasterio.shutil.copy(staging, tmp, driver="COG", COMPRESS="DEFLATE",
                                 PREDICTOR="YES" if dtype.kind == "f" else "NO",
                                 BLOCKSIZE=block_side(count, dtype.itemsize), RESAMPLING=resampling.upper(),
                                 OVERVIEW_RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER",
                                 INTERLEAVE="PIXEL" if count > 1 else "BAND")
        check_readable(tmp, path)
    return path


def check_readable(path: str | os.PathLike, name: str | os.PathLike | None = None) -> None:
    """Read a raster back: every block row of the full-resolution level and the last block of each
    overview level. WriteError (naming ``name``, default ``path``) when GDAL fails or reports an
    error on the way: a file truncated by a full disk does not pass."""
    name = name if name is not None else path
    try:
        with gdal_errors(name):
            with rasterio.open(path) as ds:
                levels = len(ds.overviews(1))
                _read_all_blocks(ds)
            for level in range(levels):
                with rasterio.open(path, overview_level=level) as ov:
                    height, width = ov.block_shapes[0]
                    ov.read(window=Window(max(ov.width - width, 0), max(ov.height - height, 0),
                                          min(width, ov.width), min(height, ov.height)))
    except WriteError as e:
        raise WriteError(f"{e} (the written file does not read back whole)") from e


def _read_all_blocks(ds: Any) -> None:
    """Read ``ds`` one row of blocks at a time (bounded memory)."""
    rows = ds.block_shapes[0][0]
    for row in range(0, ds.height, rows):
        ds.read(window=Window(0, row, ds.width, min(rows, ds.height - row)))


def block_side(count: int, itemsize: int) -> int:
    """Block side in pixels: MAX_BLOCK halved while ``side² * count * itemsize > BLOCK_BYTES``
    (so a 128-band float32 embedding block stays a few MB), but not below MIN_BLOCK."""
    side = MAX_BLOCK
    while side > MIN_BLOCK and side * side * count * itemsize > BLOCK_BYTES:
        side //= 2
    return side


def is_cog(path: str | os.PathLike) -> bool:
    """True when GDAL reports the file's layout as COG (the ghost header written by the COG driver)."""
    with rasterio.open(path) as ds:
        return ds.driver == "GTiff" and ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
