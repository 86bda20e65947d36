"""geo.tile_read: one GDAL read per run of tiles gives the same tiles as a read per tile.

The products of geo.map are made from these tiles, so equal tiles mean unchanged products; the
per-tile read (``read_tile``) is the reading geo.map did before runs were read at once.
"""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from geo.grid import TileGrid
from geo.raster import open_raster
from geo.tile_read import lattice_runs, read_tile, read_tiles

TILE = 16


def scene(path, dtype="uint8", nodata=None, overviews=False, width=203, height=141):
    """A textured RGB GeoTIFF at 1 m (odd sizes, so edge tiles are padded); ``nodata`` marks a corner
    nodata, a float raster gets NaNs there."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 7.0) * 60 + np.cos(yy / 5.0) * 50 + 120)[None] + rng.normal(0, 20, (3, height, width))
    data = np.clip(base, 0, 255).astype(dtype)
    if nodata is not None:
        data[:, :30, :40] = nodata
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype=dtype,
                       crs="EPSG:32632", transform=Affine(1.0, 0, 500000, 0, -1.0, 5000000), nodata=nodata,
                       tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(data)
        if overviews:
            ds.build_overviews([2, 4, 8], Resampling.average)
    return path


def per_tile(src, tiles):
    pairs = [read_tile(src, t, TILE) for t in tiles]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


@pytest.mark.parametrize("gsd", [1.0, 2.0, 1.5, 12.0, 0.7])
@pytest.mark.parametrize("stride", [None, 8])
@pytest.mark.parametrize("kind", ["plain", "nodata", "float-nan", "overviews", "overviews-exact"])
def test_runs_read_the_same_tiles_as_one_read_per_tile(tmp_path, gsd, stride, kind):
    """Downsampled (integer and fractional factors, 12x with and without overviews, exact or rounded
    overview sizes), 1:1 and upsampled, adjacent and overlapping tiles, padded edges, nodata and NaN
    masks: every tile and mask equal."""
    options = {"plain": {}, "nodata": {"nodata": 0}, "float-nan": {"dtype": "float32", "nodata": np.nan},
               "overviews": {"overviews": True},  # 203 x 141 px: overview sizes rounded, read tile by tile
               "overviews-exact": {"overviews": True, "width": 256, "height": 136}}[kind]
    path = scene(tmp_path / "scene.tif", **options)
    with open_raster(path) as src:
        grid = TileGrid.from_source(src, TILE, gsd, stride)
        tiles = list(grid)
        rgb, valid = read_tiles(src, tiles, TILE)
        want_rgb, want_valid = per_tile(src, tiles)
    assert np.array_equal(valid, want_valid)
    assert np.array_equal(rgb, want_rgb)
    assert valid.any() and not valid.all()  # real content and padded edges both present


def test_runs_follow_cell_rows_the_lattice_and_the_size_cap(tmp_path):
    """One run per cell row at the default stride; a stride that does not divide evenly reads tile by
    tile; the pixel cap splits a row into several reads."""
    with open_raster(scene(tmp_path / "s.tif")) as src:
        grid = TileGrid.from_source(src, TILE, 1.0)
        rows, cols = grid.cell_shape
        windows = [t.window for t in grid]
        assert lattice_runs(windows, TILE) == [(r * cols, (r + 1) * cols, TILE) for r in range(rows)]
        capped = lattice_runs(windows[:cols], TILE, max_pixels=TILE * TILE * 4)
        assert [stop - start for start, stop, _ in capped] == [4, 4, 4, 1]
        odd = TileGrid.from_source(src, TILE, 1.0, stride=7)  # d = 7 px: a lattice; 1.5 m: 10.5 px, not one
        assert all(d in (0, 7) for *_, d in lattice_runs([t.window for t in odd], TILE))
        uneven = TileGrid.from_source(src, TILE, 1.5, stride=7)
        assert {stop - start for start, stop, _ in lattice_runs([t.window for t in uneven], TILE)} == {1}
