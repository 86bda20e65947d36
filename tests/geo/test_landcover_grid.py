"""The land-cover output grid: on the input's pixel grid, an integer multiple of it, within its extent."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from geo.cog import StagedRaster
from geo.grid import TileGrid
from geo.landcover_grid import output_factor, output_gsd, output_shape, output_transform, regrid, source_index

ORIGIN = Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0)


def grid(width: int, height: int, source_gsd: float, gsd: float, tile: int = 64, stride: int | None = None) -> TileGrid:
    transform = Affine(source_gsd, 0, 1000.0, 0, -source_gsd, 2000.0)
    return TileGrid(width, height, transform, (source_gsd, source_gsd), tile, gsd, stride)


@pytest.mark.parametrize("source_gsd, gsd, factor", [
    (0.5, 1.0, 2),     # 2 input pixels per model pixel: land cover at 1 m
    (0.5, 1.2, 2),     # 2.4 per model pixel: the coarsest integer multiple not coarser, 2
    (1.38, 1.0, 1),    # 0.72 per model pixel: the input's own resolution
    (0.5, 6.0, 12),    # 12 input pixels per model pixel
])
def test_the_factor_is_the_coarsest_whole_multiple_not_coarser_than_the_model(source_gsd, gsd, factor):
    g = grid(1000, 700, source_gsd, gsd)
    assert output_factor(g) == (factor, factor)
    assert output_gsd(g) == pytest.approx((source_gsd * factor, source_gsd * factor))
    assert output_transform(g) == g.transform @ Affine.scale(factor)
    rows, cols = output_shape(g)
    assert (rows, cols) == (-(-700 // factor), -(-1000 // factor))
    assert cols * factor - 1000 < factor and rows * factor - 700 < factor  # less than one output pixel past


def test_overlapping_tiles_keep_the_model_pixel_of_a_cell():
    g = grid(1000, 700, 0.5, 1.0, tile=64, stride=32)
    assert output_factor(g) == (2, 2)  # step 64 input px over stride 32 model px


def test_source_index_takes_the_model_pixel_under_each_output_centre():
    # m = 0.72 input px per model pixel, k = 1: output pixel i has its centre at i + 0.5 input px
    idx = source_index(6, 0, 1, 0.72, limit=100)
    assert idx.tolist() == [int((i + 0.5) / 0.72) for i in range(6)]
    assert source_index(3, 10, 2, 2.0, limit=11).tolist() == [10, 10, 10]  # clipped to the model grid


def test_regrid_resamples_strips_onto_the_output_grid(tmp_path):
    g = grid(300, 250, 0.5, 1.0, tile=16)  # model pixel = 2 input px, output factor 2: one to one
    rows, cols = (n * g.stride for n in g.cell_shape)
    model = np.random.default_rng(0).integers(0, 5, (rows, cols), dtype=np.uint8)
    staged = StagedRaster(tmp_path / "model.tif", width=cols, height=rows, count=1, dtype="uint8",
                          transform=ORIGIN, crs="EPSG:32632", nodata=255, descriptions=["c"])
    staged.write(model, 0)
    staged.seal()
    out_rows, out_cols = output_shape(g)
    out = StagedRaster(tmp_path / "out.tif", width=out_cols, height=out_rows, count=1, dtype="uint8",
                       transform=output_transform(g), crs="EPSG:32632", nodata=255, descriptions=["c"])
    regrid(staged.staging, out, g)
    with rasterio.open(out.staging) as ds:
        assert ds.shape == (125, 150)
        assert np.array_equal(ds.read(1), model[:125, :150])
