"""Disk space a mapping run will write, checked against the free space before it starts.

A run writes, into one file system (``OUT/<stem>/`` and its ``.partial/``), and keeps until the
end (staging files are deleted only after publishing, see :mod:`geo.journal`):

- staging rasters: uncompressed tiled GTiffs of whole blocks, ``ceil(h / b) * b * ceil(w / b) *
  b * bands * bytes`` each (``b`` = :func:`geo.cog.block_side`);
- COGs: at most the raw size plus overviews (1/3) plus GDAL's temporary overview file while it
  copies (1/3): ``5/3 * h * w * bands * bytes`` each (DEFLATE usually makes them far smaller);
- tile records: :data:`TILE_RECORD_BYTES` per tile, once as Parquet parts and once in tiles.gpkg;
- landcover.gpkg: :data:`POLYGON_BYTES_PER_PIXEL` per land-cover pixel (a fragmented map's
  vertices), plus :data:`FILE_OVERHEAD` per file.

The grids: cell rasters are ``rows x cols`` (the tile grid), land cover is staged at ``rows *
stride x cols * stride`` model pixels and again on its output grid (:mod:`geo.landcover_grid`),
which the product and landcover.gpkg have; embeddings have ``embedding_dim`` float32 bands, scores one float32 band per sound
class plus one (``uncertainty``, :mod:`geo.uncertainty`), class rasters one uint8 band. It is an estimate, meant to stop a run that cannot fit
before it spends hours, not to predict the last byte.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from geo.cog import block_side
from geo.errors import NoSpaceError
from geo.gdal_log import format_bytes
from geo.grid import TileGrid
from geo.landcover_grid import output_shape

FILE_OVERHEAD = 128 << 10  # bytes: TIFF directories, GeoPackage tables and indexes
TILE_RECORD_BYTES = 1024  # per tile record (row, col, scores, nearest recordings)
POLYGON_BYTES_PER_PIXEL = 2.0  # landcover.gpkg, per land-cover pixel
COG_FACTOR = 5.0 / 3.0  # COG + overviews + GDAL's temporary overview file, per raw byte


@dataclass(frozen=True)
class SpaceEstimate:
    """Bytes a run writes: ``staging`` (staging rasters and tile-record parts) and ``products``."""

    staging: int
    products: int

    @property
    def total(self) -> int:
        return self.staging + self.products


def _staging_bytes(height: int, width: int, bands: int, itemsize: int) -> int:
    """An uncompressed tiled GTiff of whole blocks."""
    b = block_side(bands, itemsize)
    return math.ceil(height / b) * b * math.ceil(width / b) * b * bands * itemsize + FILE_OVERHEAD


def _cog_bytes(height: int, width: int, bands: int, itemsize: int) -> int:
    """Upper bound of a COG and its transient overview file (uncompressed)."""
    return int(COG_FACTOR * height * width * bands * itemsize) + FILE_OVERHEAD


def estimate(grid: TileGrid, embedding_dim: int, sound_classes: int, landcover: bool) -> SpaceEstimate:
    """What mapping ``grid`` writes (see the module doc); ``sound_classes`` 0 without a soundscape head."""
    rows, cols = grid.cell_shape
    rasters = [(rows, cols, embedding_dim, 4)]
    if sound_classes:
        rasters += [(rows, cols, 1, 1), (rows, cols, sound_classes + 1, 4)]  # + 1: the uncertainty band
    staged = list(rasters)
    if landcover:
        out_rows, out_cols = output_shape(grid)
        rasters.append((out_rows, out_cols, 1, 1))
        staged += [(rows * grid.stride, cols * grid.stride, 1, 1), (out_rows, out_cols, 1, 1)]
    records = len(grid) * TILE_RECORD_BYTES + FILE_OVERHEAD
    staging = sum(_staging_bytes(*r) for r in staged) + records
    products = sum(_cog_bytes(*r) for r in rasters) + records
    if landcover:
        products += int(out_rows * out_cols * POLYGON_BYTES_PER_PIXEL) + FILE_OVERHEAD
    return SpaceEstimate(staging, products)


def written_bytes(folder: Path) -> int:
    """Bytes already allocated to the files under ``folder`` (a resumed run's ``.partial/``)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def check_free_space(out: Path, need: SpaceEstimate, already: int = 0) -> None:
    """NoSpaceError (one line: the folder, the estimate, the free space) when ``need.total`` less
    the ``already`` written bytes of a resumed run exceeds the free space of ``out`` (or of its
    nearest existing parent)."""
    folder = out.absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    remaining = max(need.total - already, 0)
    if remaining > free:
        parts = f"{format_bytes(need.staging)} staging + {format_bytes(need.products)} products"
        what = (f"about {format_bytes(remaining)} more (of {format_bytes(need.total)}: {parts}, the rest is written)"
                if already else f"about {format_bytes(remaining)} ({parts})")
        raise NoSpaceError(f"{out}: mapping needs {what} but only {format_bytes(free)} is free in {folder}; "
                           f"free some space, choose another --out, or pass --ignore-free-space")
