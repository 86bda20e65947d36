"""pydeck layers of a mapped scene, their legends, and the map view; no tile server needed.

The imagery itself is the base layer: a ``BitmapLayer`` of a downsampled RGB PNG/JPEG placed by
the four corners of the raster's footprint, reprojected to longitude/latitude (EPSG:4326). For a
UTM scene the footprint is a slightly rotated quadrilateral, which a bitmap with four corners draws
exactly at the corners (and to within a fraction of a pixel inside, for scenes of a few km).

Class rasters (``landcover.tif``, ``soundscape.tif``) and the similarity heatmap are coloured RGBA
bitmaps over the same kind of footprint (nodata transparent); the tiles of ``tiles.gpkg`` are a
``PolygonLayer`` with transparent fill whose tooltips list each tile's top sounds and nearest
recordings. The map style is an inline background-only style (:func:`offline_style`); a web
basemap (Carto) is only used when asked for.
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
OFFLINE_BACKGROUND = "#20242a"  # map background without a web basemap
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


def preview_caption(label: str, fp: Footprint, facts: dict[str, Any]) -> str:
    """One line under an imagery preview: what it shows, the footprint (metres, centre in degrees),
    the CRS and the resolution (metres per pixel, and the size in pixels) from
    ``geo.raster.describe``'s ``facts``."""
    lon, lat = fp.center
    where = f"{abs(lat):.4f}° {'N' if lat >= 0 else 'S'}, {abs(lon):.4f}° {'E' if lon >= 0 else 'W'}"
    gx, gy = (float(f"{v:.3g}") for v in facts["gsd_m"])
    gsd = f"{gx:g} m" if gx == gy else f"{gx:g} x {gy:g} m"
    return (f"Imagery of {label} (preview, not mapped): footprint {_metres(fp.width_m)} x {_metres(fp.height_m)} "
            f"around {where}; CRS {_crs_name(facts)}; {gsd} per pixel ({facts['width']:,} x {facts['height']:,} "
            "pixels).")


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


def heat_layer_image(similarity: np.ndarray, profile: dict[str, Any]) -> tuple[str, Footprint]:
    """The similarity band of a ``geo.query.query_embeddings`` result as a data URL and footprint."""
    fp = footprint(profile["transform"], profile["width"], profile["height"], profile.get("crs"))
    return _data_url(_enlarge(heat_colors(similarity))), fp


def bitmap_layer(layer_id: str, image: str, fp: Footprint, opacity: float = 1.0) -> pdk.Layer:
    """A deck.gl BitmapLayer of a data URL placed by a footprint's four corners.

    pydeck reads a bare string prop as an accessor expression; a quoted one is passed as text."""
    return pdk.Layer("BitmapLayer", id=layer_id, image=f'"{image}"', bounds=fp.bounds(), opacity=float(opacity),
                     pickable=False)


def tile_records(tiles_gpkg: str | Path) -> list[dict[str, Any]]:
    """One dict per tile of ``tiles.gpkg``: ``tile`` ("r3 c5"), ``row``, ``col``, ``polygon``
    (lon/lat ring), ``sound_j`` / ``score_j`` (scores as text, 0..1), and for the nearest gallery
    recordings ``near_j`` (title), ``near_j_key`` and ``near_j_distance`` (as text)."""
    import geopandas as gpd

    frame = gpd.read_file(tiles_gpkg)
    if frame.crs is not None:
        frame = frame.to_crs("EPSG:4326")
    records = []
    for rec in frame.to_dict("records"):
        geom = rec.pop("geometry")
        out: dict[str, Any] = {"tile": f"r{int(rec['row'])} c{int(rec['col'])}", "row": int(rec["row"]),
                               "col": int(rec["col"]),
                               "polygon": [[round(x, 7), round(y, 7)] for x, y in geom.exterior.coords]}
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


def tiles_layer(records: list[dict[str, Any]], opacity: float = 1.0) -> pdk.Layer:
    """Tile outlines (pickable, for tooltips) with a transparent fill that highlights on hover."""
    return pdk.Layer("PolygonLayer", id="tiles", data=records, get_polygon="polygon", filled=True, stroked=True,
                     get_fill_color=[255, 255, 255, 0], get_line_color=[255, 255, 255, 110],
                     line_width_min_pixels=1, pickable=True, auto_highlight=True,
                     highlight_color=[255, 255, 255, 70], opacity=float(opacity))


def tooltip(records: list[dict[str, Any]]) -> dict[str, Any]:
    """pydeck tooltip of the tiles layer: tile id, top sounds with scores, nearest recordings."""
    keys = records[0].keys() if records else []
    lines = ["<b>tile {tile}</b>"]
    lines += [f"{{sound_{j}}} {{score_{j}}}" for j in range(1, 4) if f"sound_{j}" in keys]
    near = [f"{{near_{j}}}" for j in range(1, 4) if f"near_{j}" in keys]
    if near:
        lines.append("<i>sounds like:</i> " + " · ".join(near))
    return {"html": "<br/>".join(lines), "style": {"fontSize": "12px"}}


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


def heat_legend_html(colormap: str = HEAT_COLORMAP, steps: int = 6) -> str:
    """Legend of the heatmap: a colour ramp from 0 (least alike) to 1 (most alike)."""
    ramp = heat_colors(np.linspace(0.0, 1.0, steps)[None, :])[0]
    cells = "".join(swatch(c[:3]) for c in ramp)
    return f"<b>Similarity heatmap</b>: least alike {cells} most alike"
