"""Vector products: ``tiles.gpkg`` (one polygon per mapped tile cell) and ``landcover.gpkg``
(polygons of the land-cover classes), both GeoPackages in the input's CRS, written atomically.

``tiles.gpkg`` columns: ``row``, ``col`` (cell indices), ``valid_frac`` (fraction of the tile's
model pixels with data), ``sound_1``..``sound_k`` (class names, best first) with ``score_1``..
``score_k`` (soundscape probabilities, 0..1), and, when the bundle has a gallery,
``near_1_key``, ``near_1_title``, ``near_1_distance`` ... (the nearest gallery recordings in
embedding distance).

``landcover.gpkg`` columns: ``class_id``, ``class_name``, ``color`` ("#rrggbb"), ``pixels`` and
``area_m2`` (``pixels * gsd_x * gsd_y``, metres²). Polygons come from
``rasterio.features.shapes`` (4-connected) over windows of ``VECTOR_WINDOW`` pixels of the class
raster, so memory stays bounded, traced in pixel coordinates (exact whole numbers) and made into
shapely polygons in one call per window (:func:`traced_polygons`); pieces touching an inner
window edge are merged per class afterwards, group by group of touching pieces
(:func:`merge_touching`); polygons smaller than ``min_area_m2`` are dropped, the rest moved onto
the CRS by the raster's transform and simplified as a coverage (shared edges stay shared) with a
tolerance of one model pixel. On a 4,000 px map of 16,000 regions this takes 3.6 s where tracing
into one shapely object per region, in CRS units and 2,048 px windows, took 8.5 s.
"""
from __future__ import annotations

import math
import os
import sqlite3
import warnings
from itertools import chain
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from pyogrio.errors import DataLayerError, DataSourceError
from rasterio.features import shapes
from rasterio.windows import Window

from geo.blend import NODATA
from geo.errors import WriteError
from geo.gdal_log import gdal_errors, write_failure
from model.core.atomic import atomic_path
from model.core.errors import one_line

VECTOR_WINDOW = 4096  # model pixels per side of a vectorisation window (16 Mpx, about 100 MB while traced)


def cell_polygons(rows: np.ndarray, cols: np.ndarray, cell_transform: Affine) -> np.ndarray:
    """Shapely boxes of cells (rows[i], cols[i]) on the cell grid ``cell_transform``."""
    x0, y0 = cell_transform @ (cols, rows)
    x1, y1 = cell_transform @ (cols + 1, rows + 1)
    return shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1))


def write_gpkg(frame: gpd.GeoDataFrame, path: str | os.PathLike, layer: str, geometry_type: str) -> Path:
    """Write a GeoDataFrame as a one-layer GeoPackage atomically (temp file, checked with
    :func:`check_gpkg`, then renamed into place); a frame without CRS (an ungeoreferenced input) is
    written without one, silently. WriteError (one line) when the write fails (a full disk:
    "database or disk is full") or the file does not read back whole; ``path`` is then left as it was."""
    with atomic_path(path) as tmp:
        try:
            with gdal_errors(path), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*crs.* was not provided", category=UserWarning)
                frame.to_file(tmp, driver="GPKG", layer=layer, engine="pyogrio", geometry_type=geometry_type)
        except (DataSourceError, DataLayerError, OSError) as e:
            if isinstance(e, WriteError):
                raise
            raise WriteError(write_failure(path, [one_line(e)])) from e
        check_gpkg(tmp, layer, len(frame), path)
    return Path(path)


def check_gpkg(path: str | os.PathLike, layer: str, rows: int, name: str | os.PathLike | None = None) -> None:
    """Read a GeoPackage back as the SQLite database it is: ``PRAGMA quick_check`` (every page
    of every table and index) must say ``ok`` and ``layer`` must hold ``rows`` features; else
    WriteError naming ``name`` (default ``path``)."""
    name = name if name is not None else path
    try:
        with closing(sqlite3.connect(f"file:{Path(path).absolute()}?mode=ro", uri=True)) as db:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            count = db.execute(f'SELECT COUNT(*) FROM "{layer}"').fetchone()[0]
    except sqlite3.Error as e:
        raise WriteError(write_failure(name, [f"it does not read back ({e})"])) from e
    if check != "ok" or count != rows:
        raise WriteError(write_failure(name, [f"it does not read back whole (integrity {check!r}, "
                                              f"{count} of {rows} features)"]))


def tiles_frame(table: pd.DataFrame, cell_transform: Affine, crs: Any) -> gpd.GeoDataFrame:
    """The tiles layer: ``table`` must hold integer ``row`` and ``col`` columns plus any attributes."""
    rows, cols = table["row"].to_numpy(np.int64), table["col"].to_numpy(np.int64)
    geometry = cell_polygons(rows, cols, cell_transform) if len(rows) else []
    return gpd.GeoDataFrame(table.astype({"row": np.int64, "col": np.int64}), geometry=geometry, crs=crs)


def _windows(width: int, height: int, size: int) -> Iterator[Window]:
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def traced_polygons(data: np.ndarray, mask: np.ndarray, col_off: int = 0,
                    row_off: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(values, polygons) of the 4-connected regions of ``data`` under ``mask``, in the pixel
    coordinates of the whole raster (the window's offsets added; corners are whole numbers, so
    pieces of one region traced in neighbouring windows share their edges exactly). The rings of
    every region are put into one ragged array and made into polygons by one shapely call."""
    values, rings, lengths, counts = [], [], [], []
    for geom, value in shapes(data, mask=mask, transform=Affine.translation(col_off, row_off), connectivity=4):
        values.append(int(value))
        counts.append(len(geom["coordinates"]))
        for ring in geom["coordinates"]:
            rings.append(ring)
            lengths.append(len(ring))
    if not values:
        return np.zeros(0, np.int64), np.zeros(0, object)
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64,
                         count=2 * sum(lengths)).reshape(-1, 2)
    offsets = (np.concatenate([[0], np.cumsum(lengths)]), np.concatenate([[0], np.cumsum(counts)]))
    return np.array(values, np.int64), shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, offsets)


def _on_inner_edge(bounds: np.ndarray, win: Window, width: int, height: int) -> np.ndarray:
    """Whether each polygon (pixel-space ``bounds`` rows: minx, miny, maxx, maxy) reaches an edge
    of its window that lies inside the raster (exact: corners are whole pixels)."""
    minx, miny, maxx, maxy = bounds.T
    right, bottom = win.col_off + win.width, win.row_off + win.height
    return (((win.col_off > 0) & (minx <= win.col_off)) | ((right < width) & (maxx >= right))
            | ((win.row_off > 0) & (miny <= win.row_off)) | ((bottom < height) & (maxy >= bottom)))


def merge_touching(pieces: Sequence[Any]) -> list[Any]:
    """Polygons of one class cut by window seams, put back together: pieces are grouped into the
    connected components of the "intersects" graph (an STRtree query, so only neighbours are
    compared), each group is unioned on its own, and the result split into its polygons (pieces
    meeting only at a corner stay apart, as 4-connected regions). Unioning every piece of a class
    at once gives the same polygons but costs far more on a large, fragmented map. (GEOS's
    coverage union refuses these pieces: a seam edge of one piece is not cut where its
    neighbour's vertices are.)"""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    geoms = np.asarray(pieces, dtype=object)
    if len(geoms) == 0:
        return []
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    graph = coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(len(geoms), len(geoms)))
    _, label = connected_components(graph, directed=False)
    order = np.argsort(label, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(label[order])) + 1)
    merged = [geoms[g[0]] if len(g) == 1 else shapely.union_all(geoms[g]) for g in groups]
    return [part for m in merged for part in shapely.get_parts(m)]


def landcover_polygons(class_raster: str | os.PathLike, classes: Sequence[dict[str, Any]],
                       gsd_m: tuple[float, float], min_area_m2: float,
                       window: int = VECTOR_WINDOW) -> gpd.GeoDataFrame:
    """Polygons of each class in a uint8 class raster (255 = no data), see the module doc.

    ``gsd_m`` is the (x, y) size of one class-raster pixel in metres; ``min_area_m2`` the smallest
    polygon kept, in metres². Tracing and seam merging happen in pixel coordinates (exact), and
    the kept polygons are moved onto the raster's CRS by its affine transform at the end.
    """
    min_pixels = min_area_m2 / (gsd_m[0] * gsd_m[1])
    kept_values, kept = [], []
    seams: dict[int, list[Any]] = {}
    with rasterio.open(class_raster) as ds:
        for win in _windows(ds.width, ds.height, window):
            data = ds.read(1, window=win)
            values, polygons = traced_polygons(data, data != NODATA, win.col_off, win.row_off)
            at_seam = _on_inner_edge(shapely.bounds(polygons).reshape(-1, 4), win, ds.width, ds.height)
            for value, poly in zip(values[at_seam], polygons[at_seam]):
                seams.setdefault(int(value), []).append(poly)
            big = ~at_seam & (shapely.area(polygons) >= min_pixels)
            kept_values.append(values[big])
            kept.append(polygons[big])
        transform, crs = ds.transform, ds.crs
    for value, pieces in seams.items():
        parts = np.array(merge_touching(pieces), dtype=object)
        parts = parts[shapely.area(parts) >= min_pixels]
        kept_values.append(np.full(len(parts), value, np.int64))
        kept.append(parts)
    return _landcover_frame(np.concatenate(kept_values), np.concatenate(kept), classes, transform, gsd_m, crs)


def _to_crs(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel-space geometries moved onto the raster's CRS: (x, y) = transform @ (col, row)."""
    a, b, c, d, e, f = transform[:6]
    return shapely.transform(geoms, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                                d * xy[:, 0] + e * xy[:, 1] + f]))


def _landcover_frame(ids: np.ndarray, geoms: np.ndarray, classes: Sequence[dict[str, Any]], transform: Affine,
                     gsd_m: tuple[float, float], crs: Any) -> gpd.GeoDataFrame:
    """The landcover layer from class ids and pixel-space polygons: pixel counts (the polygons'
    areas in pixels) and areas measured before the coverage simplification, which runs in the
    CRS with a tolerance of one pixel (sqrt of the pixel's area, CRS units); MultiPolygon geometries."""
    pixels = np.rint(shapely.area(geoms)).astype(np.int64) if len(geoms) else np.zeros(0, np.int64)
    geoms = _to_crs(geoms, transform) if len(geoms) else geoms
    if len(geoms):
        tolerance = math.sqrt(abs(transform.determinant))
        try:
            geoms = shapely.coverage_simplify(geoms, tolerance)
        except shapely.errors.GEOSException:  # not a clean coverage: simplify each on its own
            geoms = shapely.simplify(geoms, tolerance, preserve_topology=True)
    names = [classes[i]["name"] if i < len(classes) else f"class_{i}" for i in ids]
    colors = ["#%02x%02x%02x" % tuple(classes[i]["color"][:3]) if i < len(classes) else "#000000" for i in ids]
    frame = pd.DataFrame({"class_id": ids, "class_name": names, "color": colors, "pixels": pixels,
                          "area_m2": pixels * gsd_m[0] * gsd_m[1]})
    multi = [g if g.geom_type == "MultiPolygon" else shapely.multipolygons([g]) for g in geoms]
    return gpd.GeoDataFrame(frame, geometry=multi, crs=crs)
