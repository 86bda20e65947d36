"""pydeck layers of a mapped scene, their legends, and the map view; no tile server needed.

The imagery itself is the base layer: a ``BitmapLayer`` of a downsampled RGB PNG/JPEG placed by
the four corners of the raster's footprint, reprojected to longitude/latitude (EPSG:4326). For a
UTM scene the footprint is a slightly rotated quadrilateral, which a bitmap with four corners draws
exactly at the corners (and to within a fraction of a pixel inside, for scenes of a few km).

Class rasters (``landcover.tif``, ``soundscape.tif``) and the similarity heatmap are coloured RGBA
bitmaps over the same kind of footprint (nodata transparent); the tiles of ``tiles.gpkg`` are a
``PolygonLayer`` with transparent fill whose tooltips list each tile's centre (in the scene's CRS and
in degrees), majority land cover, top sounds, nearest recordings and, after a query, its similarity
and probability; clicking a tile selects it (Streamlit's pydeck selection, :func:`selected_tile`).
The best cells of a query are outlined and numbered (:func:`best_cell_layers`). deck.gl's scale
widget is not in Streamlit's deck.gl bundle, so the scale bar is HTML under the map, true at the
initial zoom (:func:`scale_bar_html`). The map style is an inline background-only style
(:func:`offline_style`); a web basemap (Carto) is only used when asked for.
"""
from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydeck as pdk
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import transform as warp_transform

MAX_PREVIEW_PX = 1024  # longest side of the imagery bitmap
AVERAGE_MAX_PIXELS = 4096 * 4096  # the imagery is averaged from at most this many pixels, else decimated (nearest)
MIN_CLASS_PX = 512  # class rasters coarser than this are enlarged (nearest) so they stay crisp
WEB_MERCATOR_M_PER_PX = 78_271.517  # metres per screen pixel at zoom 0 on the equator (512 px world)
FIT_MARGIN = 0.85  # share of the map height the scene fills
MAP_HEIGHT_PX = 560
EARTH_RADIUS_M = 6_371_000.0
HEAT_COLORMAP = "magma"
UNCERTAINTY_COLORMAP = "cividis"  # 0 = one sound class certain (dark blue) .. 1 = all classes equally likely (yellow)
OFFLINE_BACKGROUND = "#20242a"  # map background without a web basemap
TILES_LAYER = "tiles"  # id of the pickable tile layer (its clicks select a tile)
TILE_OPACITY = 0.4  # the tile layer's opacity: Streamlit fills a clicked tile with its opaque fill colour
TILE_FILL = (255, 196, 0)  # amber: a clicked tile shows in it, at TILE_OPACITY
BEST_COLOR = (0, 229, 255)  # outlines of a query's best cells
SCALE_BAR_MAX_PX = 160  # longest scale bar under the map, screen pixels
MAJORITY_MAX_PX = 4096  # land cover is read at most this many pixels a side for the tiles' majority class
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Footprint:
    """A raster's outline in degrees: ``corners`` [lon, lat] in the order bottom-left, top-left,
    top-right, bottom-right (deck.gl's BitmapLayer order); ``width_m`` / ``height_m`` the lengths
    of its top and left edges in metres."""

    corners: tuple[tuple[float, float], ...]
    width_m: float
    height_m: float

    @property
    def center(self) -> tuple[float, float]:
        """(lon, lat) mean of the corners, degrees."""
        lons, lats = zip(*self.corners)
        return float(np.mean(lons)), float(np.mean(lats))

    def bounds(self) -> list[list[float]]:
        """The corners as deck.gl wants them: ``[[lon, lat], ...]``."""
        return [list(c) for c in self.corners]


def ground_distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Metres between two (lon, lat) points, equirectangular approximation:
    ``R * sqrt((dlon * cos(mean lat))^2 + dlat^2)`` with R = 6 371 km (good to < 1 % over tens of km)."""
    lat = math.radians((a[1] + b[1]) / 2)
    dx = math.radians(b[0] - a[0]) * math.cos(lat)
    dy = math.radians(b[1] - a[1])
    return EARTH_RADIUS_M * math.hypot(dx, dy)


def footprint(transform: Any, width: int, height: int, crs: Any) -> Footprint:
    """Footprint of a ``width`` x ``height`` pixel grid with affine ``transform`` in ``crs``."""
    if crs is None:
        raise ValueError("the raster has no coordinate reference system, so it cannot be placed on a map")
    cols, rows = [0, 0, width, width], [height, 0, 0, height]
    xs, ys = zip(*(transform @ (c, r) for c, r in zip(cols, rows)))
    lons, lats = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    corners = tuple((float(x), float(y)) for x, y in zip(lons, lats))
    return Footprint(corners, ground_distance(corners[1], corners[2]), ground_distance(corners[0], corners[1]))


def view_state(fp: Footprint, height_px: int = MAP_HEIGHT_PX) -> pdk.ViewState:
    """A view centred on the footprint with the zoom that fits its larger side into 85 % of
    ``height_px``: ``zoom = log2(78272 m/px * cos(lat) * 0.85 * height_px / extent_m)`` (deck.gl's
    world is 512 px wide at zoom 0)."""
    lon, lat = fp.center
    extent = max(fp.width_m, fp.height_m, 1.0)
    zoom = math.log2(WEB_MERCATOR_M_PER_PX * math.cos(math.radians(lat)) * FIT_MARGIN * height_px / extent)
    return pdk.ViewState(longitude=lon, latitude=lat, zoom=round(max(0.0, min(zoom, 22.0)), 2), pitch=0, bearing=0)


def _data_url(image: np.ndarray, lossless: bool = True) -> str:
    """Data URL of an (H, W, 3|4) uint8 array: PNG, or JPEG when not ``lossless`` and opaque."""
    from PIL import Image

    buf = io.BytesIO()
    if image.shape[2] == 4 and image[..., 3].min() == 255:
        image = image[..., :3]
    if image.shape[2] == 3 and not lossless:
        Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    Image.fromarray(image, "RGBA" if image.shape[2] == 4 else "RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _out_shape(height: int, width: int, max_px: int) -> tuple[int, int]:
    f = min(1.0, max_px / max(height, width))
    return max(1, round(height * f)), max(1, round(width * f))


def imagery_resampling(ds: Any, band: int, shape: tuple[int, ...],
                       max_pixels: int = AVERAGE_MAX_PIXELS) -> Resampling:
    """How to shrink the raster ``ds`` to ``shape`` (pixels): ``average`` when GDAL reads it from at
    most ``max_pixels`` pixels (the raster itself, or the overview it picks: the coarsest one still
    at least as fine as ``shape``), else ``nearest``, a decimated read that skips the pixels between
    the ones it keeps, so a huge raster without overviews stays cheap to preview."""
    decimation = ds.width / shape[-1]
    factor = max([1] + [f for f in ds.overviews(band) if f <= decimation])
    read = (ds.width / factor) * (ds.height / factor)
    return Resampling.average if read <= max_pixels else Resampling.nearest


def imagery(path: str | Path, max_px: int = MAX_PREVIEW_PX) -> tuple[str, Footprint]:
    """The scene as a data URL (at most ``max_px`` per side, from an overview or a decimated read:
    :func:`imagery_resampling`; the mapping's own RGB bands and contrast stretch, nodata
    transparent) and its footprint. Works on any raster ``geo.raster.open_raster`` opens, mapped
    or not."""
    from geo.raster import open_raster
    from geo.scaling import apply, valid_pixels

    with open_raster(path) as src:
        ds = src.dataset
        shape = (3, *_out_shape(ds.height, ds.width, max_px))
        how = imagery_resampling(ds, src.bands[0], shape)
        data = src.guarded_read(lambda: ds.read(list(src.bands), out_shape=shape, resampling=how))
        masks = src.guarded_read(lambda: ds.read_masks(list(src.bands), out_shape=shape, resampling=Resampling.nearest))
        ok = valid_pixels(data, masks)
        rgb = np.where(ok, apply(src.scaling, data), 0).transpose(1, 2, 0)
        alpha = (ok * 255).astype(np.uint8)[..., None]
        fp = footprint(ds.transform, ds.width, ds.height, ds.crs)
    return _data_url(np.ascontiguousarray(np.concatenate([rgb, alpha], axis=2)), lossless=False), fp


def _metres(value: float) -> str:
    """A length to 3 significant digits: "300 m", "28.6 km"."""
    return f"{float(f'{value / 1000:.3g}'):g} km" if value >= 1000 else f"{float(f'{value:.3g}'):g} m"


def _crs_name(facts: dict[str, Any]) -> str:
    """"EPSG:32618 (WGS 84 / UTM zone 18N)" from ``geo.raster.describe``'s ``epsg`` / ``crs_wkt``."""
    from pyproj import CRS

    name = CRS.from_wkt(facts["crs_wkt"]).name if facts.get("crs_wkt") else "none"
    return f"EPSG:{facts['epsg']} ({name})" if facts.get("epsg") else name


def _degrees(lon: float, lat: float, digits: int = 4) -> str:
    """"48.2131° N, 9.1234° E" from degrees."""
    return f"{abs(lat):.{digits}f}° {'N' if lat >= 0 else 'S'}, {abs(lon):.{digits}f}° {'E' if lon >= 0 else 'W'}"


def crs_label(crs: Any) -> str:
    """"EPSG:32632", or the CRS's name when it has no EPSG code."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def _crs_units(crs: Any) -> tuple[str, int]:
    """How to write coordinates of ``crs``: (unit suffix, decimals): metres " m" to 0.1, degrees
    "°" to 6 decimals, other units by name to 2."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    unit = crs.axis_info[0].unit_name if crs.axis_info else ""
    return {"metre": (" m", 1), "degree": ("°", 6)}.get(unit, (f" {unit}" if unit else "", 2))


def crs_coords(x: float, y: float, crs: Any) -> str:
    """A point in its CRS's own units: "x 664,920.0 m, y 5,343,080.0 m (EPSG:32632)"."""
    unit, n = _crs_units(crs)
    return f"x {x:,.{n}f}{unit}, y {y:,.{n}f}{unit} ({crs_label(crs)})"


def crs_bounds(xs: Sequence[float], ys: Sequence[float], crs: Any) -> str:
    """The box around points in their CRS's units: "x 664,904.0 to 665,096.0 m, y ... m"."""
    unit, n = _crs_units(crs)
    return (f"x {min(xs):,.{n}f} to {max(xs):,.{n}f}{unit}, "
            f"y {min(ys):,.{n}f} to {max(ys):,.{n}f}{unit}")


def preview_caption(label: str, fp: Footprint, facts: dict[str, Any]) -> str:
    """One line under an imagery preview: what it shows, the footprint (metres, centre in degrees),
    the CRS and the resolution (metres per pixel, and the size in pixels) from
    ``geo.raster.describe``'s ``facts``."""
    where = _degrees(*fp.center)
    gsd = _gsd_text(facts["gsd_m"])
    return (f"Imagery of {label} (preview, not mapped): footprint {_metres(fp.width_m)} x {_metres(fp.height_m)} "
            f"around {where}; CRS {_crs_name(facts)}; {gsd} per pixel ({facts['width']:,} x {facts['height']:,} "
            "pixels).")


def _gsd_text(gsd: Sequence[float]) -> str:
    """"0.5 m" or "0.5 x 0.6 m" (metres per pixel, 3 significant digits)."""
    gx, gy = (float(f"{v:.3g}") for v in gsd)
    return f"{gx:g} m" if gx == gy else f"{gx:g} x {gy:g} m"


def map_caption(fp: Footprint, info: dict[str, Any]) -> str:
    """The "About this map" line, from a map's ``run.json`` (``info``) and the scene's footprint:
    the CRS, the extent (metres on the ground, and the bounds in the CRS's units), the imagery's
    resolution (metres per pixel, size in pixels) and the map's cells (metres, rows x columns);
    "" when ``run.json`` lacks these facts."""
    try:
        facts, grid = info["input"], info["grid"]
        a, b, c, d, e, f = facts["transform"][:6]
        width, height = int(facts["width"]), int(facts["height"])
        xs = [c + a * i + b * j for i, j in ((0, 0), (width, 0), (0, height), (width, height))]
        ys = [f + d * i + e * j for i, j in ((0, 0), (width, 0), (0, height), (width, height))]
        gsd = [float(v) for v in facts["gsd_m"]]
        rows, cols = (int(v) for v in grid["cell_shape"])
        cell_m = float(grid["cell_step_px"][0]) * gsd[0]
        tile_m = float(grid["window_size_px"][0]) * gsd[0]
    except (KeyError, TypeError, ValueError, IndexError):
        return ""
    crs = facts.get("crs_wkt")
    bounds = crs_bounds(xs, ys, crs) if crs else "no CRS"
    tiles = f", each from a {_metres(tile_m)} tile" if abs(tile_m - cell_m) > 1e-6 else ""
    return (f"About this map: CRS {_crs_name(facts)}; extent {_metres(fp.width_m)} x {_metres(fp.height_m)} "
            f"on the ground around {_degrees(*fp.center)} ({bounds}); imagery {_gsd_text(gsd)} per pixel "
            f"({width:,} x {height:,} pixels); map cells {_metres(cell_m)} ({rows} x {cols}{tiles}).")


def bbox_footprint(west: float, south: float, east: float, north: float) -> Footprint:
    """The footprint of a box in degrees (a region's items' bboxes together)."""
    corners = ((west, south), (west, north), (east, north), (east, south))
    return Footprint(corners, ground_distance(corners[1], corners[2]), ground_distance(corners[0], corners[1]))


def region_caption(fp: Footprint, stems: Sequence[str], crs: Sequence[str], bundles: Sequence[str],
                   max_px: int = MAX_PREVIEW_PX) -> str:
    """The "About this region" line: how many mapped inputs (named when few), their CRSs, the
    extent on the ground (metres) around its centre (degrees), the bundles it was mapped with, and
    that the layers are shown decimated to at most ``max_px`` pixels a side."""
    names = f" ({', '.join(stems)})" if len(stems) <= 6 else ""
    return (f"About this region: {len(stems)} mapped inputs{names}; CRS {', '.join(crs) or 'unknown'}; extent "
            f"{_metres(fp.width_m)} x {_metres(fp.height_m)} on the ground around {_degrees(*fp.center)}; mapped "
            f"with bundle {', '.join(bundles)}; layers from the mosaics, read decimated to at most {max_px} px a "
            f"side.")


def metres_per_pixel(latitude: float, zoom: float) -> float:
    """Ground metres per screen pixel of deck.gl's web-Mercator view at ``latitude`` (degrees) and
    ``zoom``: ``78272 m * cos(lat) / 2^zoom``."""
    return WEB_MERCATOR_M_PER_PX * math.cos(math.radians(latitude)) / 2.0 ** zoom


def scale_bar(latitude: float, zoom: float, max_px: int = SCALE_BAR_MAX_PX) -> tuple[float, float]:
    """The longest round length (1, 2 or 5 x 10^k metres) whose bar fits in ``max_px`` screen pixels
    at ``latitude`` and ``zoom``: (length in metres, bar width in pixels)."""
    per_px = metres_per_pixel(latitude, zoom)
    top = per_px * max_px
    exponent = math.floor(math.log10(top))
    length = max(m * 10.0 ** exponent for m in (1, 2, 5) if m * 10.0 ** exponent <= top)
    return length, length / per_px


def scale_bar_html(view: pdk.ViewState, max_px: int = SCALE_BAR_MAX_PX) -> str:
    """A scale bar (HTML) for the map's initial view, said to hold at that zoom only (deck.gl's own
    scale widget is not in the deck.gl that Streamlit serves)."""
    length, px = scale_bar(float(view.latitude), float(view.zoom), max_px)
    bar = (f'<span style="display:inline-block;width:{px:.0f}px;height:0.45em;border:2px solid currentColor;'
           'border-top:none;margin-right:0.5em;vertical-align:middle"></span>')
    return f"{bar}{_metres(length)} <small>(scale at the initial zoom; zooming changes it)</small>"


def colorize(classes: np.ndarray, colors: Sequence[RGB], nodata: int | None = 255) -> np.ndarray:
    """uint8 class ids (H, W) -> RGBA (H, W, 4): ``colors[id]``; nodata and unknown ids transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for i, c in enumerate(colors[:256]):
        lut[i] = (*c, 255)
    if nodata is not None and 0 <= nodata < 256:
        lut[int(nodata)] = 0
    return lut[classes]


def _enlarge(image: np.ndarray, min_px: int = MIN_CLASS_PX) -> np.ndarray:
    """Repeat pixels by a whole factor so the longer side reaches ``min_px`` (keeps cells crisp)."""
    k = max(1, math.ceil(min_px / max(image.shape[:2])))
    return image if k == 1 else image.repeat(k, axis=0).repeat(k, axis=1)


def class_layer_image(path: str | Path, colors: Sequence[RGB], max_px: int = MAX_PREVIEW_PX) -> tuple[str, Footprint]:
    """A uint8 class raster (band 1, nodata transparent) as a coloured data URL and its footprint."""
    with rasterio.open(path) as ds:
        shape = _out_shape(ds.height, ds.width, max_px)
        classes = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
        nodata = None if ds.nodata is None else int(ds.nodata)
        fp = footprint(ds.transform, ds.width, ds.height, ds.crs)
    return _data_url(_enlarge(colorize(classes, colors, nodata))), fp


def heat_colors(similarity: np.ndarray, colormap: str = HEAT_COLORMAP) -> np.ndarray:
    """Similarity 0..1 (H, W), NaN = no data -> RGBA uint8 with the matplotlib colormap; NaN transparent."""
    import matplotlib

    lut = (matplotlib.colormaps[colormap](np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)
    ok = np.isfinite(similarity)
    index = np.clip(np.rint(np.nan_to_num(similarity, nan=0.0) * 255), 0, 255).astype(np.int64)
    rgba = lut[index]
    rgba[..., 3] = np.where(ok, 255, 0)
    return rgba


def decimate(values: np.ndarray, max_px: int = MAX_PREVIEW_PX) -> np.ndarray:
    """A 2-D array at most ``max_px`` a side: the value nearest each pixel centre of the smaller grid
    (as GDAL's decimated nearest read), so it still covers the same footprint; unchanged when small."""
    height, width = values.shape[:2]
    out_h, out_w = _out_shape(height, width, max_px)
    if (out_h, out_w) == (height, width):
        return values
    rows = ((np.arange(out_h) + 0.5) * height / out_h).astype(np.int64)
    cols = ((np.arange(out_w) + 0.5) * width / out_w).astype(np.int64)
    return values[rows][:, cols]


def heat_layer_image(similarity: np.ndarray, profile: dict[str, Any],
                     max_px: int = MAX_PREVIEW_PX) -> tuple[str, Footprint]:
    """The similarity band of a ``geo.query.query_embeddings`` result as a data URL (at most
    ``max_px`` a side, :func:`decimate`: a region's heatmap may be large) and footprint."""
    fp = footprint(profile["transform"], profile["width"], profile["height"], profile.get("crs"))
    return _data_url(_enlarge(heat_colors(decimate(similarity, max_px)))), fp


def uncertainty_layer_image(path: str | Path, max_px: int = MAX_PREVIEW_PX) -> tuple[str, Footprint] | None:
    """The ``uncertainty`` band of a ``soundscape_scores.tif`` or of its mosaic (the normalised
    entropy of a cell's sound-class scores, 0..1, ``geo.uncertainty``) as a data URL (at most
    ``max_px`` per side, a decimated read) and footprint; NaN transparent. None when the file has
    no such band (a map made before it existed)."""
    from geo.uncertainty import UNCERTAINTY

    with rasterio.open(path) as ds:
        if UNCERTAINTY not in ds.descriptions:
            return None
        band = ds.descriptions.index(UNCERTAINTY) + 1
        shape = _out_shape(ds.height, ds.width, max_px)
        values = ds.read(band, out_dtype="float32", out_shape=shape, resampling=Resampling.nearest,
                         masked=True).filled(np.nan)
        fp = footprint(ds.transform, ds.width, ds.height, ds.crs)
    return _data_url(_enlarge(heat_colors(values, UNCERTAINTY_COLORMAP))), fp


def uncertainty_legend_html(steps: int = 6) -> str:
    """Legend of the uncertainty layer: a ramp from certain (0) to uncertain (1)."""
    return (f"<b>Soundscape uncertainty</b> (entropy of the class scores): one class certain "
            f"{ramp_html(UNCERTAINTY_COLORMAP, steps)} all equally likely")


def bitmap_layer(layer_id: str, image: str, fp: Footprint, opacity: float = 1.0) -> pdk.Layer:
    """A deck.gl BitmapLayer of a data URL placed by a footprint's four corners.

    pydeck reads a bare string prop as an accessor expression; a quoted one is passed as text."""
    return pdk.Layer("BitmapLayer", id=layer_id, image=f'"{image}"', bounds=fp.bounds(), opacity=float(opacity),
                     pickable=False)


def footprint_layers(records: list[dict[str, Any]]) -> list[pdk.Layer]:
    """The outlines of a region's inputs (``footprints``, white) and their names (``footprint_labels``)
    from records with ``input``, ``polygon`` and ``position`` (``app.catalog_scene.footprint_records``);
    neither is pickable, so tooltips and clicks go to the tiles."""
    if not records:
        return []
    outline = pdk.Layer("PolygonLayer", id="footprints", data=records, get_polygon="polygon", filled=False,
                        stroked=True, get_line_color=[255, 255, 255, 220], line_width_min_pixels=2, pickable=False)
    labels = pdk.Layer("TextLayer", id="footprint_labels", data=records, get_position="position", get_text="input",
                       get_size=14, get_color=[255, 255, 255, 255], background=True, background_padding=[4, 1],
                       get_background_color=[20, 24, 30, 180], pickable=False)
    return [outline, labels]


def majority_classes(path: str | Path, bounds: np.ndarray, crs: Any = None,
                     max_px: int = MAJORITY_MAX_PX) -> list[tuple[int, float] | None]:
    """The most frequent class of a uint8 class raster (band 1, nodata left out) inside each box of
    ``bounds`` ((N, 4) minx, miny, maxx, maxy in ``crs``, default the raster's): (class id, its
    share of the box's valid pixels, 0..1), or None for a box without valid pixels. A raster wider
    than ``max_px`` pixels is read decimated (nearest) to that size, so the shares are approximate."""
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as ds:
        height, width = _out_shape(ds.height, ds.width, max_px)
        classes = ds.read(1, out_shape=(height, width), resampling=Resampling.nearest)
        nodata = None if ds.nodata is None else int(ds.nodata)
        inverse = ~(ds.transform @ Affine.scale(ds.width / width, ds.height / height))
        if crs is not None and ds.crs is not None and rasterio.crs.CRS.from_user_input(crs) != ds.crs:
            bounds = np.array([transform_bounds(crs, ds.crs, *box) for box in bounds])
    out: list[tuple[int, float] | None] = []
    for minx, miny, maxx, maxy in np.asarray(bounds, float).reshape(-1, 4):
        (c0, r0), (c1, r1) = inverse @ (minx, maxy), inverse @ (maxx, miny)
        rows = slice(max(0, math.floor(min(r0, r1) + 1e-6)), min(height, math.ceil(max(r0, r1) - 1e-6)))
        cols = slice(max(0, math.floor(min(c0, c1) + 1e-6)), min(width, math.ceil(max(c0, c1) - 1e-6)))
        values = classes[rows, cols].ravel()
        values = values if nodata is None else values[values != nodata]
        if values.size == 0:
            out.append(None)
            continue
        counts = np.bincount(values)
        top = int(np.argmax(counts))
        out.append((top, float(counts[top] / values.size)))
    return out


def _class_text(found: tuple[int, float] | None, names: Sequence[str]) -> str:
    """"forest (82%)" for a majority class and its share; "no data" for None."""
    if found is None:
        return "no data"
    name = names[found[0]] if found[0] < len(names) else f"class {found[0]}"
    return f"{name} ({found[1]:.0%})"


def tile_records(tiles_gpkg: str | Path, landcover_tif: str | Path | None = None,
                 class_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One dict per tile of ``tiles.gpkg``: ``tile`` ("r3 c5"), ``row``, ``col``, ``polygon``
    (lon/lat ring), ``centre`` (the tile's centre in the scene's CRS, :func:`crs_coords`) and
    ``degrees`` (the same point in degrees), ``sound_j`` / ``score_j`` (scores as text, 0..1), for
    the nearest gallery recordings ``near_j`` (title), ``near_j_key`` and ``near_j_distance`` (as
    text), and with ``landcover_tif`` ``landcover``: the tile's majority class named by
    ``class_names`` and its share of the tile ("forest (82%)", :func:`majority_classes`)."""
    import geopandas as gpd

    frame = gpd.read_file(tiles_gpkg)
    crs = frame.crs
    bounds = frame.geometry.bounds.to_numpy().reshape(-1, 4)
    xs, ys = (bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2  # cell centres, scene CRS
    classes = majority_classes(landcover_tif, bounds, crs) if landcover_tif is not None and len(frame) else None
    if crs is not None:
        lons, lats = warp_transform(crs, "EPSG:4326", list(xs), list(ys)) if len(frame) else ([], [])
        frame = frame.to_crs("EPSG:4326")
    records = []
    for i, rec in enumerate(frame.to_dict("records")):
        geom = rec.pop("geometry")
        out: dict[str, Any] = {"tile": f"r{int(rec['row'])} c{int(rec['col'])}", "row": int(rec["row"]),
                               "col": int(rec["col"]),
                               "polygon": [[round(x, 7), round(y, 7)] for x, y in geom.exterior.coords]}
        if crs is not None:
            out["centre"] = crs_coords(float(xs[i]), float(ys[i]), crs)
            out["degrees"] = _degrees(lons[i], lats[i], 5)
        if classes is not None:
            out["landcover"] = _class_text(classes[i], class_names)
        for j in range(1, 4):
            if f"sound_{j}" in rec:
                out[f"sound_{j}"] = str(rec[f"sound_{j}"])
                out[f"score_{j}"] = f"{float(rec[f'score_{j}']):.2f}"
            if f"near_{j}_key" in rec:
                out[f"near_{j}"] = str(rec.get(f"near_{j}_title", ""))
                out[f"near_{j}_key"] = int(rec[f"near_{j}_key"])
                out[f"near_{j}_distance"] = f"{float(rec.get(f'near_{j}_distance', float('nan'))):.3g}"
        records.append(out)
    return records


def with_query(records: list[dict[str, Any]], array: np.ndarray) -> list[dict[str, Any]]:
    """Copies of the tile records with the query's values at each tile's cell (``row``, ``col`` index
    the heatmap ``array`` (3, rows, cols)): ``similarity`` (band 1, 0..1, as text) and, when the
    bundle is calibrated (band 3 not all NaN), ``probability`` of the same place ("64%"); "no data"
    for a cell without a value. A cheap per-run step: the records themselves stay cached."""
    similarity, probability = array[0], array[2]
    calibrated = bool(np.isfinite(probability).any())
    rows, cols = similarity.shape
    out = []
    for rec in records:
        inside = 0 <= rec["row"] < rows and 0 <= rec["col"] < cols
        value = float(similarity[rec["row"], rec["col"]]) if inside else math.nan
        extra = {"similarity": f"{value:.2f}" if math.isfinite(value) else "no data"}
        if calibrated:
            p = float(probability[rec["row"], rec["col"]]) if inside else math.nan
            extra["probability"] = f"{p:.0%}" if math.isfinite(p) else "no data"
        out.append({**rec, **extra})
    return out


def tiles_layer(records: list[dict[str, Any]], opacity: float = TILE_OPACITY) -> pdk.Layer:
    """Tile outlines (pickable: tooltips and clicks) with a transparent fill that highlights on hover.

    The fill colour is :data:`TILE_FILL` at alpha 0: Streamlit draws a clicked (selected) tile in it
    at full alpha, so the layer's ``opacity`` keeps that tile see-through."""
    return pdk.Layer("PolygonLayer", id=TILES_LAYER, data=records, get_polygon="polygon", filled=True, stroked=True,
                     get_fill_color=[*TILE_FILL, 0], get_line_color=[255, 255, 255, 255],
                     line_width_min_pixels=1, pickable=True, auto_highlight=True,
                     highlight_color=[255, 255, 255, 170], opacity=float(opacity))


def tooltip(records: list[dict[str, Any]]) -> dict[str, Any]:
    """pydeck tooltip of the tiles layer: tile id, its centre (scene CRS and degrees), majority
    land cover, top sounds with scores, the query's similarity and probability, nearest recordings
    (each line only when the records carry its fields)."""
    keys = records[0].keys() if records else []
    lines = ["<b>tile {tile}</b> (click to listen)"]
    if "centre" in keys:
        lines.append("<i>centre:</i> {centre} · {degrees}")
    if "landcover" in keys:
        lines.append("<i>land cover:</i> {landcover}")
    lines += [f"{{sound_{j}}} {{score_{j}}}" for j in range(1, 4) if f"sound_{j}" in keys]
    if "similarity" in keys:
        same = " · <i>same place:</i> {probability}" if "probability" in keys else ""
        lines.append("<i>similarity to the query:</i> {similarity}" + same)
    near = [f"{{near_{j}}}" for j in range(1, 4) if f"near_{j}" in keys]
    if near:
        lines.append("<i>sounds like:</i> " + " · ".join(near))
    return {"html": "<br/>".join(lines), "style": {"fontSize": "12px"}}


def selected_tile(event: Any, layer_id: str = TILES_LAYER) -> str | None:
    """The tile ("r3 c5") picked in a ``st.pydeck_chart`` selection event, shaped as Streamlit
    returns it (``{"selection": {"indices": {layer: [i]}, "objects": {layer: [record]}}}``); None when
    nothing of ``layer_id`` is selected."""
    try:
        objects = event["selection"]["objects"].get(layer_id) or []
    except (KeyError, TypeError, AttributeError):
        return None
    tile = objects[0].get("tile") if objects and isinstance(objects[0], dict) else None
    return str(tile) if tile else None


def marked_cells(array: np.ndarray, likely: float | None = None) -> list[tuple[int, int, int]]:
    """The query's cells to mark on the map: (rank 1..3, row, col) of ``app.sound_query.answer_cells``
    (with a calibrated heatmap only the likely ones, so none when no cell is likely, as the page says)."""
    from app.sound_query import answer_cells

    return [(rank, r, c) for rank, (r, c, _) in enumerate(answer_cells(array, likely=likely), start=1)]


def _cell_ring(profile: dict[str, Any], row: int, col: int) -> list[list[float]]:
    """The lon/lat ring (degrees) of heatmap cell (``row``, ``col``) of a raster ``profile``."""
    t = profile["transform"]
    xs, ys = zip(*(t @ (col + dc, row + dr) for dc, dr in ((0, 0), (1, 0), (1, 1), (0, 1), (0, 0))))
    lons, lats = warp_transform(profile["crs"], "EPSG:4326", list(xs), list(ys))
    return [[round(x, 7), round(y, 7)] for x, y in zip(lons, lats)]


def best_cell_layers(marks: list[tuple[int, int, int]], profile: dict[str, Any]) -> list[pdk.Layer]:
    """Outlines (``best_cells``) and rank labels "1", "2", "3" (``best_labels``) of the marked cells
    (:func:`marked_cells`) of a heatmap with raster ``profile``; none when no cell is marked.
    Neither is pickable, so clicks and tooltips go to the tiles under them. The labels are white on
    dark: while a tile is clicked Streamlit dims every other layer's text colour (alpha 0.4), which
    stays readable there."""
    if not marks:
        return []
    data = []
    for rank, row, col in marks:
        ring = _cell_ring(profile, row, col)
        lon, lat = np.mean([p[0] for p in ring[:4]]), np.mean([p[1] for p in ring[:4]])
        data.append({"rank": str(rank), "cell": f"r{row} c{col}", "polygon": ring,
                     "position": [round(float(lon), 7), round(float(lat), 7)]})
    outline = pdk.Layer("PolygonLayer", id="best_cells", data=data, get_polygon="polygon", filled=False,
                        stroked=True, get_line_color=[*BEST_COLOR, 255], line_width_min_pixels=3, pickable=False)
    labels = pdk.Layer("TextLayer", id="best_labels", data=data, get_position="position", get_text="rank",
                       get_size=18, get_color=[255, 255, 255, 255], background=True, background_padding=[4, 1],
                       get_background_color=[20, 24, 30, 200], font_weight=700,  # a number: pydeck reads a string
                       pickable=False)  # as an expression
    return [outline, labels]


def offline_style(background: str = OFFLINE_BACKGROUND) -> str:
    """A MapLibre style with no sources, only a background colour, as a ``data:`` URL: the map
    library loads it without any request. (Streamlit swaps a missing map style for a Carto web
    style, so "no style" would still fetch tiles.)"""
    style = {"version": 8, "sources": {}, "layers": [
        {"id": "background", "type": "background", "paint": {"background-color": background}}]}
    return "data:application/json;base64," + base64.b64encode(json.dumps(style).encode()).decode()


def make_deck(layers: list[pdk.Layer], view: pdk.ViewState, web_basemap: bool = False,
              tip: dict[str, Any] | None = None) -> pdk.Deck:
    """The deck over :func:`offline_style` (nothing is fetched), or over Carto's light web
    basemap when ``web_basemap``."""
    if web_basemap:
        return pdk.Deck(layers=layers, initial_view_state=view, map_provider="carto", map_style="light",
                        tooltip=tip or False)
    return pdk.Deck(layers=layers, initial_view_state=view, map_provider=None, map_style=offline_style(),
                    tooltip=tip or False)


def swatch(color: Sequence[int]) -> str:
    """An inline HTML colour square."""
    r, g, b = (int(v) for v in color[:3])
    return (f'<span style="display:inline-block;width:0.9em;height:0.9em;margin-right:0.3em;vertical-align:middle;'
            f'border:1px solid #888;background:rgb({r},{g},{b})"></span>')


def legend_html(title: str, classes: Sequence[dict[str, Any]]) -> str:
    """Legend of a class layer: the title, then one swatch and name per class."""
    items = " &nbsp; ".join(f"{swatch(c['color'])}{c['name']}" for c in classes)
    return f"<b>{title}</b>: {items}"


def ramp_html(colormap: str, steps: int = 6) -> str:
    """``steps`` swatches of ``colormap`` from 0 to 1 (:func:`heat_colors`), for a legend."""
    return "".join(swatch(c[:3]) for c in heat_colors(np.linspace(0.0, 1.0, steps)[None, :], colormap)[0])


def heat_legend_html(colormap: str = HEAT_COLORMAP, steps: int = 6) -> str:
    """Legend of the heatmap: a colour ramp from 0 (least alike) to 1 (most alike)."""
    return f"<b>Similarity heatmap</b>: least alike {ramp_html(colormap, steps)} most alike"
