"""geo.grid: tile windows in source pixels, the exact cell grid, and the resolution warning."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geo.grid import Tile, TileGrid, resample_refusal, resolution_warning
from geo.raster import open_raster
from geo.tile_read import read_tiles


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """North-up affine (rasterio's helper of the same name, without its deprecation warning)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "geotiff"
ORIGIN = from_origin(500000.0, 4000000.0, 0.25, 0.25)  # 0.25 m pixels


def coverage(grid: TileGrid, windows: bool = False) -> np.ndarray:
    """How often each source pixel lies in a cell (or, with windows=True, in a tile window)."""
    counts = np.zeros((grid.height, grid.width), int)
    for tile in grid.windows():
        if windows:
            w = tile.window
            r0, c0 = max(0, w.row_off), max(0, w.col_off)
            counts[r0:w.row_off + w.height, c0:w.col_off + w.width] += 1
        else:
            sx, sy = grid.step
            counts[tile.row * sy:(tile.row + 1) * sy, tile.col * sx:(tile.col + 1) * sx] += 1
    return counts


def test_factor_two_reads_twice_the_tile_and_cells_cover_the_raster_once():
    grid = TileGrid(100, 70, ORIGIN, (0.25, 0.25), tile_size=16, gsd=0.5)
    assert grid.resolution_factor == 2.0 and grid.window_size == (32, 32) and grid.step == (32, 32)
    assert grid.cell_shape == (3, 4) and len(grid) == 12
    assert grid.effective_gsd == (0.5, 0.5)
    assert (coverage(grid) == 1).all()  # every source pixel in exactly one cell
    last = grid.tile(len(grid) - 1).window
    assert (last.col_off, last.row_off, last.width, last.height) == (96, 64, 32, 32)  # reaches past the edge


def test_cell_transform_is_an_exact_sub_grid():
    grid = TileGrid(100, 70, ORIGIN, (0.25, 0.25), tile_size=16, gsd=0.5, stride=8)
    ct = grid.cell_transform
    assert ct @ (0, 0) == ORIGIN @ (0, 0)
    assert grid.step == (16, 16)  # stride * factor source pixels per cell
    for row, col in [(0, 1), (2, 3), (4, 6)]:
        assert ct @ (col, row) == ORIGIN @ (col * 16, row * 16)  # every cell corner is a pixel corner
    assert ct.a == 16 * ORIGIN.a and ct.e == 16 * ORIGIN.e


def test_overlapping_tiles_are_centred_on_their_cells():
    grid = TileGrid(100, 70, ORIGIN, (0.25, 0.25), tile_size=16, gsd=0.5, stride=8)
    assert grid.cell_shape == (5, 7) and grid.window_size == (32, 32) and grid.pad == (8, 8)
    for tile in grid.windows():
        w = tile.window
        assert w.col_off + w.width / 2 == (tile.col + 0.5) * 16
        assert w.row_off + w.height / 2 == (tile.row + 0.5) * 16
    assert (coverage(grid, windows=True) >= 1).all()
    assert (coverage(grid) == 1).all()


def test_fractional_factor_snaps_to_whole_pixels_and_records_the_exact_scale():
    grid = TileGrid(1000, 1000, from_origin(0, 0, 0.7, 0.7), (0.7, 0.7), tile_size=192, gsd=0.5)
    assert grid.window_size == (137, 137)  # round(192 * 0.5 / 0.7) = round(137.14)
    assert grid.scale == (137 / 192, 137 / 192)
    assert grid.effective_gsd[0] == pytest.approx(0.7 * 137 / 192)
    assert abs(grid.effective_gsd[0] - 0.5) <= 0.7 / 2 / 192 * 1.0001  # within half a source pixel per tile
    assert grid.tile_transform(grid.tile(0)) == grid.pixel_transform


def test_non_square_pixels_give_different_windows_per_axis():
    grid = TileGrid(200, 200, from_origin(10, 60, 1e-5, 1e-5), (0.558, 1.114), tile_size=64, gsd=1.114)
    assert grid.window_size == (128, 64) and grid.step == (128, 64)
    assert grid.effective_gsd == pytest.approx((1.116, 1.114))


def test_pixel_and_tile_transforms_agree_without_overlap():
    grid = TileGrid(100, 70, ORIGIN, (0.25, 0.25), tile_size=16, gsd=0.5)
    tile = grid.tile(5)
    assert (tile.row, tile.col) == (1, 1)
    t = grid.tile_transform(tile)
    assert t @ (0, 0) == ORIGIN @ (32, 32)
    assert t == grid.pixel_transform @ Affine.translation(16, 16)
    assert grid.pixel_shape == (48, 64)


def test_row_major_order_chunks_and_resume():
    grid = TileGrid(100, 70, ORIGIN, (0.25, 0.25), tile_size=16, gsd=0.5)
    tiles = list(grid)
    assert [(t.row, t.col) for t in tiles[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert [t.index for t in tiles] == list(range(12))
    chunks = list(grid.chunks(5))
    assert [len(c) for c in chunks] == [5, 5, 2] and [t for c in chunks for t in c] == tiles
    assert [t.index for t in grid.windows(start=10)] == [10, 11]
    assert isinstance(tiles[0], Tile)
    json.dumps(grid.to_dict())


def test_resolution_warning_text():
    fine = TileGrid(64, 64, ORIGIN, (0.0625, 0.0625), tile_size=16, gsd=0.5)
    assert resolution_warning(fine) == "input is 8.0x finer than the model's 0.5 m; mapping anyway"
    four_coarser = TileGrid(64, 64, ORIGIN, (2.0, 2.0), tile_size=16, gsd=0.5)
    assert resolution_warning(four_coarser) == "input is 4.0x coarser than the model's 0.5 m; mapping anyway"
    close = TileGrid(64, 64, ORIGIN, (0.25, 0.25), tile_size=16, gsd=0.5)
    assert resolution_warning(close) is None
    almost = TileGrid(64, 64, ORIGIN, (0.13, 0.13), tile_size=16, gsd=0.5)  # 3.8x
    assert resolution_warning(almost) is None


def test_very_coarse_input_reads_at_least_one_pixel():
    grid = TileGrid(791, 718, ORIGIN, (300.0, 300.0), tile_size=192, gsd=0.5)
    assert grid.window_size == (1, 1) and grid.step == (1, 1) and len(grid) == 791 * 718
    assert "600.0x coarser" in resolution_warning(grid)


def test_resample_refusal_only_beyond_eight_times_coarser():
    landsat = TileGrid(791, 718, ORIGIN, (300.0, 300.0), tile_size=192, gsd=0.5)
    assert resample_refusal(landsat, "RGB.byte.tif") == (
        "RGB.byte.tif: its pixels are 300 m, 600x coarser than the bundle's 0.5 m; mapping it would upsample "
        "every tile (more than 8x is refused; python -m geo.map --allow-resample maps it anyway)")
    just_over = TileGrid(64, 64, ORIGIN, (8.1, 8.1), tile_size=16, gsd=1.0)
    assert "8.1x coarser" in resample_refusal(just_over, "a.tif")
    oblong = TileGrid(64, 64, ORIGIN, (30.0, 20.0), tile_size=16, gsd=1.0)
    assert resample_refusal(oblong, "b.tif").startswith("b.tif: its pixels are 30 x 20 m, 24.5x coarser")
    for source in (8.0, 7.9, 0.01):  # exactly 8x, under 8x, and 100x finer (downsampling) are mapped
        assert resample_refusal(TileGrid(64, 64, ORIGIN, (source, source), tile_size=16, gsd=1.0), "c.tif") is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="gsd must be a positive number"):
        TileGrid(10, 10, ORIGIN, (1.0, 1.0), tile_size=16, gsd=0)
    with pytest.raises(ValueError, match="would leave gaps"):
        TileGrid(10, 10, ORIGIN, (1.0, 1.0), tile_size=16, gsd=1.0, stride=32)
    with pytest.raises(ValueError, match="source_gsd_x"):
        TileGrid(10, 10, ORIGIN, (float("nan"), 1.0), tile_size=16, gsd=1.0)
    grid = TileGrid(10, 10, ORIGIN, (1.0, 1.0), tile_size=4, gsd=1.0)
    with pytest.raises(IndexError):
        grid.window(3, 0)


def test_tiles_of_a_real_scene_cover_its_valid_pixels_exactly():
    with open_raster(DATA / "RGB.byte.tif") as src:
        grid = TileGrid.from_source(src, tile_size=64, gsd=300.04)  # ~1:1 model pixels
        assert grid.window_size == (64, 64) and grid.cell_shape == (12, 13)
        _, valid = read_tiles(src, grid.windows(), 64)
        mosaic = valid.reshape(12, 13, 64, 64).transpose(0, 2, 1, 3).reshape(12 * 64, 13 * 64)
        expected = src.dataset.dataset_mask() > 0
        assert np.array_equal(mosaic[:718, :791], expected)
        assert not mosaic[718:].any() and not mosaic[:, 791:].any()  # padding is invalid
        assert grid.cell_transform @ (0, 0) == src.transform @ (0, 0)
