"""geo.vectors: land-cover polygons traced window by window equal those traced in one piece."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from geo.blend import NODATA
from geo.vectors import landcover_polygons, merge_touching

CLASSES = [{"name": n, "color": c} for n, c in (("urban", [255, 0, 255]), ("forest", [0, 160, 0]),
                                                ("water", [0, 0, 255]))]
GSD = 2.0  # metres per class-raster pixel


def blobs(path: Path, size: int = 120, seed: int = 0) -> np.ndarray:
    """A class raster of smooth random regions (3 classes) with a nodata hole; written to ``path``."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((3, size // 8 + 1, size // 8 + 1))
    fine = np.kron(coarse, np.ones((8, 8)))[:, :size, :size] + 0.3 * rng.random((3, size, size))
    classes = fine.argmax(axis=0).astype(np.uint8)
    classes[40:55, 60:90] = NODATA
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", nodata=NODATA,
                       crs="EPSG:32632", transform=Affine(GSD, 0, 500000, 0, -GSD, 5000000)) as ds:
        ds.write(classes, 1)
    return classes


@pytest.mark.parametrize("window", [17, 50])
def test_windowed_tracing_gives_the_polygons_of_a_single_pass(tmp_path, window):
    classes = blobs(tmp_path / "lc.tif")
    whole = landcover_polygons(tmp_path / "lc.tif", CLASSES, (GSD, GSD), 0.0, window=1000)
    pieces = landcover_polygons(tmp_path / "lc.tif", CLASSES, (GSD, GSD), 0.0, window=window)
    assert len(pieces) == len(whole) > 10
    for frame in (whole, pieces):
        counts = frame.groupby("class_id").pixels.sum().to_dict()
        assert counts == {k: int((classes == k).sum()) for k in range(3)}  # every pixel once
    key = lambda f: sorted(zip(f.class_id, f.pixels))
    assert key(pieces) == key(whole)


def test_merge_touching_joins_edges_not_corners():
    a, b = shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)  # share an edge: one polygon
    c, d = shapely.box(5, 5, 6, 6), shapely.box(6, 6, 7, 7)  # share a corner: stay two
    e = shapely.box(10, 0, 11, 1)  # alone
    merged = merge_touching([a, c, e, b, d])
    assert sorted(round(p.area, 6) for p in merged) == [1.0, 1.0, 1.0, 2.0]
    assert merge_touching([]) == []
