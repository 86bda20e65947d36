"""A mapped region as one scene: the STAC catalogue (``OUT/catalog.json``) of a ``python -m geo.map`` output folder.

With ``--allow-server-paths`` a visitor may name, as the server path of a scene, a folder written
by ``geo.map`` (holding ``catalog.json``) or ``catalog.json`` itself (:func:`catalogue_scene`).
Nothing is mapped again: the region is read as it is (:func:`read_region`):

- its items (one per mapped input, :mod:`geo.catalog`): the input's name, its footprint (GeoJSON
  polygon in degrees), the bundle it was mapped with (``geoaudio:bundle_hash``) and its products;
- its mosaics (the assets of the child collection ``mosaic``, :mod:`geo.mosaic`): per product one
  VRT, or one per CRS (``<product>_EPSG-<code>.vrt``) when the inputs differ in CRS.

The class layers take their colours and names from the mosaics' own colour tables and class names
(:func:`mosaic_classes`), so any bundle may be selected to look at a region; a sound query reads the
embeddings mosaic and needs the bundle the region was mapped with (:func:`query_refusal`). Tile
records (hover values, listening) come from each input's own ``tiles.gpkg`` (:func:`region_records`),
up to :data:`MAX_REGION_TILES` tiles.

A folder with mapped runs but no ``catalog.json`` is not read until the visitor asks for its
catalogue to be built (``geo.catalog.publish_catalogue``, :mod:`app.region_view`).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.scenes import UploadError
from model.core.errors import GeoaudioError, one_line

CATALOG_FILE = "catalog.json"  # geo.catalog.CATALOG_FILE (not imported: the app imports pystac only for a region)
MOSAIC_CHILD = "mosaic"  # id of the catalogue's child collection of mosaic VRTs
MAX_REGION_TILES = 20_000  # tile records (hover, listening) are drawn for at most this many tiles in a region
MAX_QUERY_MB = 512  # a sound query reads at most this many MB of the embeddings mosaic (float32)
CRS_SUFFIX = re.compile(r"_(EPSG-\d+|CRS-[0-9a-f]{8})$")  # geo.mosaic's per-CRS suffix of a VRT's stem
PRODUCTS = ("landcover", "soundscape", "soundscape_scores", "embeddings")


class CatalogueError(GeoaudioError, ValueError):
    """A catalogue the app cannot show; the one-line message names the file and the problem."""


@dataclass(frozen=True)
class CatalogScene:
    """A mapped region named as a server path: its folder ``root`` and ``root/catalog.json``
    (which may not exist yet), and ``label`` for the page."""

    label: str
    root: Path

    @property
    def catalog(self) -> Path:
        """``root/catalog.json``."""
        return self.root / CATALOG_FILE


@dataclass(frozen=True)
class RegionItem:
    """One mapped input of a region: ``stem`` (the item id, ``OUT/<stem>/``), ``folder`` of its
    products, ``bundle_hash`` it was mapped with, its footprint ``ring`` ([lon, lat] points, or
    None) and ``bbox`` (west, south, east, north degrees, or None)."""

    stem: str
    folder: Path
    bundle_hash: str | None
    ring: tuple[tuple[float, float], ...] | None
    bbox: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class Region:
    """A region read from its catalogue: ``root`` folder, ``items`` (by stem) and ``mosaics``:
    product (``landcover`` ...) -> its VRTs (one per CRS), sorted."""

    root: Path
    items: tuple[RegionItem, ...]
    mosaics: dict[str, tuple[Path, ...]]

    @property
    def bundle_hashes(self) -> list[str]:
        """The distinct bundle hashes the items were mapped with, sorted ("?" for an item without one)."""
        return sorted({item.bundle_hash or "?" for item in self.items})


def is_catalogue_path(path: Path) -> bool:
    """Whether a server path names a region rather than a raster: a folder, or a ``catalog.json``."""
    return path.is_dir() or path.name.lower() == CATALOG_FILE


def catalogue_scene(path: Path) -> CatalogScene:
    """The region of a folder or of its ``catalog.json`` (UploadError when that file is missing)."""
    if path.is_dir():
        return CatalogScene(f"the mapped region {path.name}", path)
    if not path.is_file():
        raise UploadError(f"{path}: no such file on the server")
    return CatalogScene(f"the mapped region {path.parent.name}", path.parent)


def _catalogue_problem(path: Path, error: Exception) -> CatalogueError:
    """The one-line error of a catalogue pystac cannot read."""
    why = "not valid JSON" if isinstance(error, json.JSONDecodeError) else one_line(error)
    return CatalogueError(f"{path}: not a readable STAC catalogue ({why})")


def read_region(catalog: Path) -> Region:
    """The region of ``catalog`` (module doc). CatalogueError (one line) when the file is not a
    readable STAC catalogue, names files that cannot be read, or has no items."""
    import pystac

    readable = (OSError, ValueError, KeyError, TypeError, AttributeError, pystac.STACError, pystac.STACTypeError)
    try:
        root = pystac.Catalog.from_file(str(catalog))
        items = [_item(item, catalog.parent) for item in root.get_items()]
        child = root.get_child(MOSAIC_CHILD)
        mosaics = _mosaics(child) if child is not None else {}
    except readable as e:
        raise _catalogue_problem(catalog, e) from None
    if not items:
        raise CatalogueError(f"{catalog}: the catalogue has no items (no mapped input)")
    return Region(catalog.parent, tuple(sorted(items, key=lambda i: i.stem)), mosaics)


def _item(item: Any, root: Path) -> RegionItem:
    """A :class:`RegionItem` from a pystac Item: its folder is that of its ``run.json`` asset
    (else of any asset, else ``root/<id>``)."""
    assets = item.assets.get("run.json") or next(iter(item.assets.values()), None)
    folder = Path(assets.get_absolute_href()).parent if assets is not None else root / str(item.id)
    ring = None
    if isinstance(item.geometry, dict) and item.geometry.get("type") == "Polygon":
        ring = tuple((float(x), float(y)) for x, y, *_ in item.geometry["coordinates"][0])
    bbox = tuple(float(v) for v in item.bbox[:4]) if item.bbox and len(item.bbox) >= 4 else None
    bundle = item.properties.get("geoaudio:bundle_hash")
    return RegionItem(str(item.id), folder, str(bundle) if bundle else None, ring, bbox)


def _mosaics(collection: Any) -> dict[str, tuple[Path, ...]]:
    """Product -> its mosaic VRTs (those on disk), from the assets of the mosaic collection."""
    found: dict[str, list[Path]] = {}
    for key, asset in collection.assets.items():
        path = Path(asset.get_absolute_href())
        if path.suffix.lower() == ".vrt" and path.is_file():
            found.setdefault(CRS_SUFFIX.sub("", Path(key).stem), []).append(path)
    return {product: tuple(sorted(paths)) for product, paths in sorted(found.items())}


def mosaic_classes(path: Path) -> list[dict[str, Any]]:
    """The classes of a class mosaic, ``[{"name", "color"}]`` by class id, from its band-1 class
    names and colour table (``geo.class_names``); ``[]`` when it has no class names."""
    import rasterio

    from geo.class_names import CLASS_NAMES

    with rasterio.open(path) as ds:
        text = ds.tags(1).get(CLASS_NAMES)
        try:
            colormap = ds.colormap(1)
        except ValueError:  # no colour table
            colormap = {}
    names = json.loads(text) if text else []
    return [{"name": str(n), "color": list(colormap.get(i, (128, 128, 128, 255))[:3])} for i, n in enumerate(names)]


def region_bounds(region: Region) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in degrees over the items' bboxes, None when none has one."""
    boxes = [item.bbox for item in region.items if item.bbox is not None]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def crs_labels(paths: Sequence[Path]) -> list[str]:
    """"EPSG:32618" (or the CRS's name) of each raster of ``paths``."""
    import rasterio

    from app.layers import crs_label

    out = []
    for path in paths:
        with rasterio.open(path) as ds:
            out.append(crs_label(ds.crs) if ds.crs is not None else "no CRS")
    return out


def query_refusal(region: Region, bundle_hash: str | None) -> str:
    """Why a sound query cannot run over ``region`` with the bundle of ``bundle_hash`` (one line), or
    "" when it can: one bundle for every item and it is the selected one, one embeddings mosaic (one
    CRS) of at most :data:`MAX_QUERY_MB` MB."""
    hashes = region.bundle_hashes
    if len(hashes) > 1:
        return (f"Sound query not available: the inputs of {region.root.name} were mapped with different bundles "
                f"({', '.join(hashes)}), whose embeddings are not comparable.")
    if bundle_hash != hashes[0]:
        selected = f"the selected bundle is {bundle_hash}" if bundle_hash else "no bundle is selected"
        return (f"Sound query not available: {region.root.name} was mapped with bundle {hashes[0]} and "
                f"{selected}; embeddings of another bundle are not comparable, so select the bundle it was mapped "
                f"with.")
    mosaics = region.mosaics.get("embeddings", ())
    if not mosaics:
        return f"Sound query not available: the catalogue of {region.root.name} has no embeddings mosaic."
    if len(mosaics) > 1:
        return (f"Sound query not available: the embeddings of {region.root.name} are in {len(mosaics)} CRSs "
                f"({', '.join(crs_labels(mosaics))}), one mosaic each, and the app queries one; rebuild them in one "
                f"CRS with python -m geo.catalog {region.root.name} --mosaic-crs EPSG:<code>.")
    size_mb = embeddings_mb(mosaics[0])
    if size_mb > MAX_QUERY_MB:
        return (f"Sound query not available: the embeddings mosaic of {region.root.name} is {size_mb:,.0f} MB, more "
                f"than the app reads for a query ({MAX_QUERY_MB} MB); use python -m geo.query on its inputs.")
    return ""


def embeddings_mb(path: Path) -> float:
    """MB a query reads from an embeddings raster: rows x cols x bands x 4 bytes (float32)."""
    import rasterio

    with rasterio.open(path) as ds:
        return ds.width * ds.height * ds.count * 4 / 2 ** 20


def tile_count(region: Region) -> int:
    """The number of tiles in the items' ``tiles.gpkg`` files (their headers only)."""
    import pyogrio

    total = 0
    for item in region.items:
        path = item.folder / "tiles.gpkg"
        if path.is_file():
            total += int(pyogrio.read_info(path).get("features") or 0)
    return total


def item_records(item: RegionItem) -> list[dict[str, Any]]:
    """The tile records of one input (``app.layers.tile_records`` over its ``tiles.gpkg``, with its
    ``landcover.tif``'s majority class named by the file's own class names), each tile named
    ``"<stem> r<row> c<col>"`` and tagged with ``input``; [] without tiles.gpkg."""
    from app.layers import tile_records
    from geo.class_names import read_class_names

    tiles, landcover = item.folder / "tiles.gpkg", item.folder / "landcover.tif"
    if not tiles.is_file():
        return []
    names = read_class_names(landcover) if landcover.is_file() else []
    records = tile_records(tiles, landcover if names else None, names)
    return [{**rec, "tile": f"{item.stem} {rec['tile']}", "input": item.stem} for rec in records]


def on_grid(records: list[dict[str, Any]], transform: Any, crs: Any, shape: tuple[int, int]) -> list[dict[str, Any]]:
    """Copies of tile records with ``row`` and ``col`` the cell of a mosaic grid (``transform``,
    ``crs``, ``shape`` rows x cols) under each tile's centre (the mean of its polygon's corners), so
    that a query's heatmap over that mosaic can be read at each tile (``app.layers.with_query``);
    a tile outside the grid gets row and col -1."""
    from rasterio.warp import transform as warp_transform

    if not records:
        return []
    lons = [float(np.mean([p[0] for p in rec["polygon"][:4]])) for rec in records]
    lats = [float(np.mean([p[1] for p in rec["polygon"][:4]])) for rec in records]
    xs, ys = warp_transform("EPSG:4326", crs, lons, lats)
    inverse = ~transform
    out = []
    for rec, x, y in zip(records, xs, ys):
        col, row = (math.floor(v) for v in inverse @ (x, y))
        inside = 0 <= row < shape[0] and 0 <= col < shape[1]
        out.append({**rec, "row": row if inside else -1, "col": col if inside else -1})
    return out


def footprint_records(region: Region) -> list[dict[str, Any]]:
    """One record per item with a footprint: ``input`` (its stem), ``polygon`` (its ring) and
    ``position`` (the mean of the ring's points, for its label)."""
    out = []
    for item in region.items:
        if item.ring:
            ring = [[round(x, 7), round(y, 7)] for x, y in item.ring]
            lon, lat = np.mean([p[0] for p in ring[:-1]]), np.mean([p[1] for p in ring[:-1]])
            out.append({"input": item.stem, "polygon": ring, "position": [round(float(lon), 7), round(float(lat), 7)]})
    return out


def region_records(region: Region, max_tiles: int = MAX_REGION_TILES) -> tuple[list[dict[str, Any]], int]:
    """The tile records of every input (:func:`item_records`), placed on the embeddings mosaic's
    grid when there is one (:func:`on_grid`), and the number of tiles; no records when there are
    more than ``max_tiles`` tiles (too many to draw)."""
    import rasterio

    count = tile_count(region)
    if count > max_tiles:
        return [], count
    records = [rec for item in region.items for rec in item_records(item)]
    grid = region.mosaics.get("embeddings", ())
    if len(grid) == 1:
        with rasterio.open(grid[0]) as ds:
            records = on_grid(records, ds.transform, ds.crs, ds.shape)
    return records, count
