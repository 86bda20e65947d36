"""A georeferenced scene of the synthetic world: an orthophoto GeoTIFF and its ground truth.

Files written to the output folder:

- ``scene.tif``: RGB uint8, ``size`` x ``size`` pixels of ``gsd`` metres, north-up, EPSG:32632;
  tiled 512 x 512, JPEG-compressed (YCbCr, quality 90), internal overviews 2, 4, 8, ... (average)
  down to about 128 pixels;
- ``landcover_truth.tif``: uint8 class ids 0..5 on the same grid, DeepGlobe colour table,
  DEFLATE, overviews by mode;
- ``soundscape_truth.tif``: per cell of ``cell`` metres (cells starting at the scene's top-left
  corner; the last row/column may reach past the scene), the sound class of the dominant sound
  source at the cell centre: the loudest of :func:`model.synth.soundscape.source_levels` (no
  per-recording jitter), as a class id of ``model.data.sound_classes.SYNTHETIC_CLASSES`` (0..5),
  with those classes' colours; the tag ``sound_classes`` lists the class names in id order;
- ``soundscape_truth.csv``: one row per cell: row, col, cell-centre easting/northing (m),
  longitude/latitude (degrees), ``frac_<class>`` (centre-weighted fractions, Gaussian sigma 24 m
  around the cell centre), ``land_cover``, the latents (``activity``, ``traffic``, ...) and
  ``dominant`` (the dominant sound source, whose class the raster holds).

The scene is centred on the middle of the world's sampling square, so pairs of the same seed fall
inside it; the top-left corner is snapped to whole metres. Pixels are rendered and written one
512 x 512 block at a time, so memory does not grow with ``size``. Every file is written under a
temporary name and renamed when complete.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from model.core.atomic import atomic_path
from model.synth.errors import SynthError
from model.synth.files import prepare_dir, write_csv
from model.data.sound_classes import SYNTHETIC_CLASSES
from model.synth.latents import LATENTS, place_latents
from model.synth.pairs import FRACTION_COLUMNS, fraction_fields, latent_fields
from model.synth.soundscape import dominant_sources, source_levels
from model.synth.textures import render
from model.synth.world import CLASS_COLOURS, CLASSES, CRS, World, pixel_grid

BLOCK = 512
MIN_OVERVIEW_PX = 128
MAX_SCENE_PX = 65_536
CSV_COLUMNS = ["row", "col", "easting", "northing", "longitude", "latitude", *FRACTION_COLUMNS, "land_cover",
               *LATENTS, "dominant"]


def scene_origin(world: World, size: int, gsd: float) -> tuple[float, float]:
    """World-local (x, y) metres of the scene's top-left corner: centred on the sampling square,
    snapped to whole metres."""
    half = size * gsd / 2.0
    centre = world.extent / 2.0
    return float(math.floor(centre - half)), float(math.floor(centre + half))


def north_up(west: float, north: float, pixel: float):
    """Affine transform of a north-up grid: top-left corner (west, north), square pixels in metres."""
    from affine import Affine

    return Affine(pixel, 0.0, west, 0.0, -pixel, north)


def overview_factors(size: int) -> list[int]:
    """2, 4, 8, ... while the overview keeps at least MIN_OVERVIEW_PX pixels (none if size < 256)."""
    factors = []
    f = 2
    while size // f >= MIN_OVERVIEW_PX:
        factors.append(f)
        f *= 2
    return factors


def _colormap(colours=CLASS_COLOURS) -> dict[int, tuple[int, int, int, int]]:
    return {i: (*rgb, 255) for i, rgb in enumerate(colours)}


def sound_class_id(source: str) -> int:
    """Class id (position in SYNTHETIC_CLASSES) of the class a sound source belongs to."""
    for i, sound_class in enumerate(SYNTHETIC_CLASSES.classes):
        if source in sound_class.dominant:
            return i
    raise SynthError(f"sound source {source!r} belongs to no synthetic sound class")


def _check(size: int, gsd: float, cell: float) -> None:
    if not 64 <= int(size) <= MAX_SCENE_PX:
        raise SynthError(f"--size must be 64..{MAX_SCENE_PX} pixels, got {size}")
    if not 0.05 <= float(gsd) <= 10.0:
        raise SynthError(f"--gsd must be 0.05..10 metres per pixel, got {gsd}")
    if not float(cell) >= gsd:
        raise SynthError(f"--cell must be at least one pixel ({gsd:g} m), got {cell:g}")


def _raster_profiles(size: int, transform, block: int) -> tuple[dict, dict]:
    common = dict(
        driver="GTiff", width=size, height=size, crs=CRS, transform=transform, dtype="uint8",
        tiled=True, blockxsize=block, blockysize=block, BIGTIFF="IF_SAFER",
    )
    rgb = dict(common, count=3, compress="JPEG", photometric="YCBCR", jpeg_quality=90, interleave="pixel")
    landcover = dict(common, count=1, compress="DEFLATE", predictor=2)
    return rgb, landcover


def _render_blocks(world: World, x0: float, y0: float, size: int, gsd: float, rgb_path: Path, lc_path: Path,
                   block: int, progress: bool) -> None:
    import rasterio
    from rasterio.windows import Window
    from tqdm import tqdm

    east, north = world.to_crs(x0, y0)
    rgb_profile, lc_profile = _raster_profiles(size, north_up(float(east), float(north), gsd), block)
    starts = range(0, size, block)
    with rasterio.open(rgb_path, "w", **rgb_profile) as rgb_dst, rasterio.open(lc_path, "w", **lc_profile) as lc_dst:
        rgb_dst.descriptions = ("red", "green", "blue")
        lc_dst.write_colormap(1, _colormap())
        lc_dst.descriptions = ("land cover class id: " + ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)),)
        for row, col in tqdm([(r, c) for r in starts for c in starts], desc="scene", unit="block", disable=not progress):
            h, w = min(block, size - row), min(block, size - col)
            gx, gy = pixel_grid(x0 + col * gsd, y0 - row * gsd, w, h, gsd)
            rgb, classes = render(world, gx, gy)
            window = Window(col, row, w, h)
            rgb_dst.write(np.moveaxis(rgb, 2, 0), window=window)
            lc_dst.write(classes[None], window=window)


def _build_overviews(path: Path, size: int, resampling: str) -> None:
    import rasterio
    from rasterio.enums import Resampling

    factors = overview_factors(size)
    if factors:
        with rasterio.open(path, "r+") as dst:
            dst.build_overviews(factors, Resampling[resampling])
            dst.update_tags(ns="rio_overview", resampling=resampling)


def _soundscape_cells(world: World, x0: float, y0: float, size: int, gsd: float, cell: float):
    n = math.ceil(size * gsd / cell - 1e-9)
    cols, rows = np.meshgrid(np.arange(n), np.arange(n))
    cx = x0 + (cols.ravel() + 0.5) * cell
    cy = y0 - (rows.ravel() + 0.5) * cell
    return n, rows.ravel(), cols.ravel(), cx, cy, world.centre_fractions(cx, cy)


def _write_soundscape(world: World, x0: float, y0: float, size: int, gsd: float, cell: float,
                      tif_path: Path, csv_path: Path) -> None:
    import rasterio

    n, rows, cols, cx, cy, fractions = _soundscape_cells(world, x0, y0, size, gsd, cell)
    latents = place_latents(world, cx, cy, fractions)
    sources = dominant_sources(source_levels(latents))
    east, north = world.to_crs(cx, cy)
    lon, lat = world.lonlat(cx, cy)
    records = []
    for i in range(rows.size):
        records.append({
            "row": str(rows[i]), "col": str(cols[i]), "easting": f"{east[i]:.2f}", "northing": f"{north[i]:.2f}",
            "longitude": f"{lon[i]:.6f}", "latitude": f"{lat[i]:.6f}", **fraction_fields(fractions[i]),
            **latent_fields(latents, i), "dominant": sources[i],
        })
    dominant = np.array([sound_class_id(s) for s in sources], dtype=np.uint8).reshape(n, n)
    e0, n0 = world.to_crs(x0, y0)
    profile = dict(driver="GTiff", width=n, height=n, count=1, dtype="uint8", crs=CRS,
                   transform=north_up(float(e0), float(n0), cell), compress="DEFLATE")
    with atomic_path(tif_path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(dominant[None])
            dst.write_colormap(1, _colormap([c.color for c in SYNTHETIC_CLASSES.classes]))
            dst.descriptions = (f"sound class of the dominant sound source per {cell:g} m cell",)
            dst.update_tags(sound_classes=",".join(SYNTHETIC_CLASSES.names))
    write_csv(records, CSV_COLUMNS, csv_path)


def write_scene(
    out_dir: str | os.PathLike, size: int = 4096, gsd: float = 0.5, seed: int = 0, cell: float = 96.0,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the scene of world ``seed`` (``size`` pixels of ``gsd`` m) and its truth to ``out_dir``.

    Returns the written paths by name: "scene", "landcover", "soundscape", "soundscape_csv".
    """
    _check(size, gsd, cell)
    size, gsd, cell = int(size), float(gsd), float(cell)
    out = prepare_dir(out_dir)
    world = World(seed)
    x0, y0 = scene_origin(world, size, gsd)
    paths = {
        "scene": out / "scene.tif", "landcover": out / "landcover_truth.tif",
        "soundscape": out / "soundscape_truth.tif", "soundscape_csv": out / "soundscape_truth.csv",
    }
    block = min(BLOCK, 16 * math.ceil(size / 16))
    with atomic_path(paths["scene"]) as rgb_tmp, atomic_path(paths["landcover"]) as lc_tmp:
        _render_blocks(world, x0, y0, size, gsd, rgb_tmp, lc_tmp, block, progress)
        _build_overviews(rgb_tmp, size, "average")
        _build_overviews(lc_tmp, size, "mode")
    _write_soundscape(world, x0, y0, size, gsd, cell, paths["soundscape"], paths["soundscape_csv"])
    return paths
