"""A STAC catalogue of what ``python -m geo.map`` mapped into one output folder, and its mosaics.

``publish_catalogue(OUT)`` (also ``python -m geo.catalog OUT [--mosaic-crs EPSG:xxxx]``) writes the
mosaic VRTs of :mod:`geo.mosaic`, then ``OUT/catalog.json``: a self-contained STAC catalogue
(pystac, ``CatalogType.SELF_CONTAINED``: every link and asset href relative, so ``OUT`` can be
moved, copied or served over HTTP as it is), built only from what is on disk:

- ``OUT/catalog.json``: the root catalogue; its items are the mapped inputs.
- ``OUT/stac/items/<stem>.json``: one Item per finished run (a folder ``OUT/<stem>/`` with a
  ``run.json``, :func:`geo.mosaic.mapped_runs`; a run.json that cannot be read is reported in one
  line and skipped). ``geometry`` is the input's footprint in WGS84 (lon/lat): its rectangle from
  run.json's transform, size and CRS, each edge densified to ``EDGE_POINTS`` points before it is
  transformed (an input crossing the antimeridian is not split); ``bbox`` its bounds. An input
  without a CRS has neither. Properties: ``geoaudio:bundle_hash``, ``geoaudio:backend``,
  ``geoaudio:source`` (the input's file name), ``geoaudio:datetime_source`` and ``created`` (when
  run.json was written: the mapping time). Assets: one per product (key = file name): the COGs
  (``MediaType.COG``, role data), the GeoPackages (``application/geopackage+sqlite3``, role data)
  and run.json (``application/json``, role metadata), each with the projection extension read
  from the file's own header (``proj:code`` or ``proj:wkt2``; for rasters also ``proj:shape``,
  ``proj:transform``, ``proj:bbox``, as cell-grid and pixel-grid products differ; for GeoPackages
  ``proj:bbox`` of the layer), STAC 1.1 ``bands`` (name, nodata, data type) on rasters, and the
  classification extension (``classification:classes``: value, name, title = class name, colour,
  and the nodata class 255) on the class rasters.
- ``OUT/mosaic/collection.json``: a Collection "mosaic", a child of the root, whose assets are the
  mosaic VRTs (``application/xml``, role data, with the same projection, bands and classification
  fields) and whose extent covers every item.

**Datetime.** STAC needs a time. When the input says when it was acquired, that is the item's
``datetime``: the first of the GDAL metadata items ``ACQUISITIONDATETIME`` (IMAGERY domain, then
the default one), ``EXIF_DateTimeOriginal``, ``TIFFTAG_DATETIME`` (the TIFF's own date, which the
writing software may have set to when the file was made), read from run.json's ``input.tags``
when a run recorded them, else from the input file when it is still there unchanged (the size and
modification time run.json records); a time without a zone is taken as UTC. Otherwise the
acquisition time is unknown and the item says so as the STAC spec requires for a null
``datetime``: ``start_datetime`` is ``UNKNOWN_START`` (0001-01-01, no lower bound known) and
``end_datetime`` the input file's modification time as run.json records it (the image existed by
then; the mapping time when it is not recorded). ``geoaudio:datetime_source`` names the metadata
item used, or says ``unknown``. The mapping time is never given as the acquisition time.

The catalogue is checked against the STAC core JSON schemas that pystac ships (jsonschema, offline:
:func:`validate_offline`); the extension schemas are not shipped and nothing is downloaded, so
extension fields are not schema-checked. Every file is written atomically; item files of runs no
longer in ``OUT`` are deleted.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.stac_io import DefaultStacIO
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import transform as transform_points

from geo.errors import RasterError
from geo.mosaic import (
    MOSAIC_DIR,
    MappedRun,
    Report,
    mapped_runs,
    read_layer,
    warn,
    write_mosaics,
)
from geo.products import (
    EMBEDDINGS,
    LANDCOVER,
    LANDCOVER_GPKG,
    SCORES,
    SOUNDSCAPE,
    TILES_GPKG,
)
from geo.runinfo import RUN_FILE
from model.core.atomic import write_text_atomic
from model.core.errors import one_line

CATALOG_FILE = "catalog.json"
ITEMS_DIR = Path("stac") / "items"  # OUT/stac/items/<stem>.json
COLLECTION_FILE = "collection.json"  # OUT/mosaic/collection.json
CATALOG_ID = "geoaudio-maps"
EDGE_POINTS = 21  # points per edge of a footprint (20 segments) before it is transformed to WGS84
UNKNOWN_START = datetime(1, 1, 1, tzinfo=timezone.utc)  # start_datetime when the acquisition time is unknown
DATETIME_TAGS = (("IMAGERY", "ACQUISITIONDATETIME"), ("", "ACQUISITIONDATETIME"), ("EXIF", "EXIF_DateTimeOriginal"),
                 ("", "EXIF_DateTimeOriginal"), ("", "TIFFTAG_DATETIME"))  # (GDAL domain, item), in order of trust
VRT_MEDIA_TYPE = pystac.MediaType.XML  # a GDAL VRT is an XML file; there is no registered media type
CLASS_NAME = re.compile(r"[^0-9A-Za-z_-]+")  # what a classification name may not contain (v2.0)

PRODUCTS = {  # file name: (title, description) of its asset
    LANDCOVER: ("Land cover", ("uint8 land-cover class per pixel (the input's grid or a whole multiple of "
                               "it); colour table, class names; nodata 255")),
    SOUNDSCAPE: ("Soundscape class", ("uint8 most likely soundscape class per tile cell; colour table, class "
                                      "names; nodata 255")),
    SCORES: ("Soundscape scores", ("float32 probability of each sound class per tile cell (one band per class), "
                                   "then 'uncertainty', the normalised entropy of the scores; nodata NaN")),
    EMBEDDINGS: ("Embeddings", "float32 image embedding per tile cell (one band per dimension); nodata NaN"),
    TILES_GPKG: ("Tiles", ("one polygon per tile cell with data: most likely sounds and scores, nearest "
                           "gallery recordings")),
    LANDCOVER_GPKG: ("Land-cover polygons", "land-cover polygons with class id, name, colour and area"),
    RUN_FILE: ("Run record", "run.json: bundle, backend, versions, input, grid, options and timings of the run"),
}


class AtomicStacIO(DefaultStacIO):
    """pystac's file I/O, writing every file atomically (:mod:`model.core.atomic`)."""

    def write_text_to_href(self, href: str, txt: str) -> None:
        """Write ``txt`` to the local file ``href`` (folders created) atomically."""
        path = Path(href)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, txt)


def publish_catalogue(out_root: Path, mosaic_crs: str | None = None) -> dict[str, Any]:
    """Write the mosaics (:func:`geo.mosaic.write_mosaics`, warped to ``mosaic_crs`` when given),
    then the catalogue (:func:`write_catalog`) of ``out_root``. Returns ``{"catalog": path or None
    (nothing mapped: nothing is written), "items": [stems], "mosaics": [VRT paths], "problems":
    [one line each, also printed on stderr]}``. RasterError for a ``mosaic_crs`` GDAL does not know."""
    out_root = Path(out_root)
    problems: list[str] = []

    def report(message: str) -> None:
        problems.append(message)
        warn(message)

    runs = mapped_runs(out_root, report)
    if not runs:
        return {"catalog": None, "items": [], "mosaics": [], "problems": problems}
    mosaics = write_mosaics(out_root, mosaic_crs, runs, report)
    catalog = write_catalog(out_root, runs=runs, mosaics=mosaics, report=report)
    return {"catalog": catalog, "items": [r.stem for r in runs], "mosaics": mosaics, "problems": problems}


def write_catalog(out_root: Path, runs: Sequence[MappedRun] | None = None, mosaics: Sequence[Path] | None = None,
                  report: Report = warn) -> Path:
    """Write ``out_root/catalog.json`` and its items and mosaic collection (module doc); returns the
    catalogue's path. ``runs`` default to :func:`geo.mosaic.mapped_runs`, ``mosaics`` to the VRTs in
    ``out_root/mosaic/``. RasterError when nothing is mapped in ``out_root``."""
    given, out_root = Path(out_root), Path(out_root).resolve()
    runs = mapped_runs(out_root, report) if runs is None else runs
    if not runs:
        raise RasterError(f"{out_root}: nothing mapped here (no folder with a run.json of python -m geo.map)")
    if mosaics is None:
        mosaics = sorted((out_root / MOSAIC_DIR).glob("*.vrt"))
    catalog = pystac.Catalog(CATALOG_ID, f"Soundscape and land-cover maps made by geoaudio (python -m geo.map) in "
                                         f"{out_root.name}: one item per mapped input.", title=out_root.name)
    catalog.set_self_href(str(out_root / CATALOG_FILE))
    items = [build_item(run, report) for run in runs]
    for item in items:
        catalog.add_item(item)
        item.set_self_href(str(out_root / ITEMS_DIR / f"{item.id}.json"))
    if mosaics:
        collection = mosaic_collection(mosaics, items)
        catalog.add_child(collection)
        collection.set_self_href(str(out_root / MOSAIC_DIR / COLLECTION_FILE))
    catalog.make_all_asset_hrefs_relative()
    validate_offline(catalog)
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=AtomicStacIO())
    _remove_stale(out_root, {item.id for item in items}, bool(mosaics))
    return given / CATALOG_FILE


def _remove_stale(out_root: Path, stems: set[str], has_mosaics: bool) -> None:
    """Delete item files of runs no longer in ``out_root`` and a mosaic collection without mosaics."""
    folder = out_root / ITEMS_DIR
    for path in folder.glob("*.json") if folder.is_dir() else []:
        if path.stem not in stems:
            path.unlink(missing_ok=True)
    if not has_mosaics:
        (out_root / MOSAIC_DIR / COLLECTION_FILE).unlink(missing_ok=True)


def build_item(run: MappedRun, report: Report = warn) -> pystac.Item:
    """The STAC Item of one finished run (module doc), its asset hrefs absolute."""
    source = run.info["input"]
    crs = _crs(source)
    geometry, bbox = _footprint_of(run, crs, report) if crs is not None else (None, None)
    created = _created(run)
    when, tag = acquisition_time(run)
    properties = {"geoaudio:bundle_hash": (run.info.get("bundle") or {}).get("content_hash"),
                  "geoaudio:backend": (run.info.get("backend") or {}).get("name"),
                  "geoaudio:source": Path(str(source.get("path", ""))).name or None,
                  "geoaudio:datetime_source": tag or "unknown"}
    unknown = when is None
    item = pystac.Item(run.stem, geometry, bbox, when, {k: v for k, v in properties.items() if v is not None},
                       start_datetime=UNKNOWN_START if unknown else None,
                       end_datetime=_file_time(source) or created if unknown else None)
    item.common_metadata.created = created
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    _apply_crs(projection, crs)
    for name in run.products() + [RUN_FILE]:
        item.add_asset(name, pystac.Asset(str((run.folder / name).resolve())))
        try:
            _describe_asset(item.assets[name], run.folder / name)
        except RasterError as e:
            report(f"{e}; its asset has no projection fields")
    missing = sorted(set(map(str, run.info.get("products") or [])) - set(run.products()))
    if missing:
        report(f"{run.folder / RUN_FILE}: lists {', '.join(missing)}, not in {run.folder}; left out of the catalogue")
    return item


def _crs(source: dict[str, Any]) -> CRS | None:
    """The input's CRS from run.json (``crs_wkt``, else ``epsg``), None when it had none."""
    try:
        if source.get("crs_wkt"):
            return CRS.from_wkt(source["crs_wkt"])
        if source.get("epsg"):
            return CRS.from_epsg(int(source["epsg"]))
    except (CRSError, ValueError):
        return None
    return None


def _footprint_of(run: MappedRun, crs: CRS, report: Report) -> tuple[dict[str, Any] | None, list[float] | None]:
    """:func:`footprint` of the run's input, or ``(None, None)`` (reported in one line) when run.json's
    grid is incomplete or does not transform to finite WGS84 coordinates."""
    try:
        geometry, bbox = footprint(run.info["input"], crs)
    except (KeyError, TypeError, ValueError, RasterioError) as e:
        geometry, bbox = None, None
        why = f"no {e} in its input" if isinstance(e, KeyError) else one_line(e)
    else:
        if all(math.isfinite(v) for v in bbox):
            return geometry, bbox
        why = "its corners do not transform to WGS84"
    report(f"{run.folder / RUN_FILE}: no footprint ({why}); the item of {run.stem} has no geometry")
    return None, None


def footprint(source: dict[str, Any], crs: CRS, points: int = EDGE_POINTS) -> tuple[dict[str, Any], list[float]]:
    """The input's rectangle (run.json's ``transform``, ``width``, ``height``) in WGS84: a GeoJSON
    Polygon (lon, lat; counter-clockwise, as RFC 7946 asks), each edge sampled at ``points``
    points, and its bbox ``[west, south, east, north]``."""
    t = Affine(*source["transform"][:6])
    w, h = float(source["width"]), float(source["height"])
    s = np.linspace(0.0, 1.0, points)[:-1]
    cols = np.concatenate([np.zeros_like(s), s * w, np.full_like(s, w), (1 - s) * w])
    rows = np.concatenate([s * h, np.full_like(s, h), (1 - s) * h, np.zeros_like(s)])
    xs, ys = t @ (cols, rows)
    lon, lat = transform_points(crs, "EPSG:4326", list(xs), list(ys))
    ring = [[float(x), float(y)] for x, y in zip(lon, lat)]
    if _signed_area(ring) < 0:
        ring.reverse()
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}, [min(lon), min(lat), max(lon), max(lat)]


def _signed_area(ring: Sequence[Sequence[float]]) -> float:
    """Shoelace area of an open ring, positive when counter-clockwise: ``sum(x_i y_i+1 - x_i+1 y_i) / 2``."""
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, list(ring[1:]) + [ring[0]])) / 2


def _created(run: MappedRun) -> datetime:
    """When the run finished: run.json's ``created``, else run.json's modification time (UTC)."""
    parsed = parse_time(str(run.info.get("created") or ""))
    if parsed is not None:
        return parsed
    return datetime.fromtimestamp((run.folder / RUN_FILE).stat().st_mtime, timezone.utc)


def _file_time(source: dict[str, Any]) -> datetime | None:
    """The input file's modification time as run.json records it (``mtime_ns``), or None."""
    ns = source.get("mtime_ns")
    return datetime.fromtimestamp(ns / 1e9, timezone.utc) if isinstance(ns, (int, float)) else None


def parse_time(text: str) -> datetime | None:
    """A metadata time: TIFF/EXIF ``YYYY:MM:DD HH:MM:SS`` or ISO 8601; without a zone taken as UTC.
    None when it is neither (or a placeholder such as ``0000:00:00 00:00:00``)."""
    text = text.strip()
    tiff = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text)
    try:
        parsed = datetime(*map(int, tiff.groups())) if tiff else datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def acquisition_time(run: MappedRun) -> tuple[datetime | None, str | None]:
    """When the input was acquired and the metadata item that says so (``DATETIME_TAGS`` order), or
    ``(None, None)``; from run.json's ``input.tags`` (``{item: value}`` or ``{domain: {item: value}}``)
    when recorded, else from the input file if it is still there unchanged."""
    tags = _recorded_tags(run.info["input"])
    if tags is None:
        tags = _input_tags(run.info["input"])
    for domain, key in DATETIME_TAGS:
        value = tags.get(domain, {}).get(key)
        when = parse_time(value) if isinstance(value, str) else None
        if when is not None:
            return when, f"{domain}:{key}" if domain else key
    return None, None


def _recorded_tags(source: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """run.json's ``input.tags`` as ``{domain: {item: value}}`` ("" = default domain), or None."""
    tags = source.get("tags")
    if not isinstance(tags, dict):
        return None
    flat = {k: v for k, v in tags.items() if not isinstance(v, dict)}
    return {"": flat, **{k: v for k, v in tags.items() if isinstance(v, dict)}}


def _input_tags(source: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The input's metadata ``{domain: {item: value}}`` for the domains of ``DATETIME_TAGS``, read
    when the file is still there with the size and modification time run.json records; else ``{}``."""
    path = Path(str(source.get("path", "")))
    try:
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != (source.get("size"), source.get("mtime_ns")):
            return {}
        with rasterio.open(path) as ds:
            return {domain: dict(ds.tags(ns=domain or None)) for domain in {d for d, _ in DATETIME_TAGS}}
    except (OSError, RasterioError):
        return {}


def _apply_crs(projection: Any, crs: CRS | None) -> None:
    """``proj:code`` (``EPSG:n``) of ``crs``, or ``proj:wkt2`` for a CRS without an EPSG code, or
    ``proj:code`` null for none."""
    code = crs.to_epsg() if crs is not None else None
    if code:
        projection.code = f"EPSG:{code}"
    elif crs is not None:
        projection.code = None
        projection.wkt2 = crs.to_wkt(version="WKT2_2019")
    else:
        projection.code = None


def _describe_asset(asset: pystac.Asset, path: Path) -> None:
    """Title, description, media type, roles and header facts of the asset of product ``path``."""
    title, description = PRODUCTS.get(path.name, (path.stem, path.name))
    asset.title, asset.description = title, description
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff", ".vrt"):
        asset.media_type = pystac.MediaType.COG if suffix != ".vrt" else VRT_MEDIA_TYPE
        asset.roles = ["data"]
        describe_raster(asset, path)
    elif suffix == ".gpkg":
        asset.media_type, asset.roles = pystac.MediaType.GEOPACKAGE, ["data"]
        _describe_gpkg(asset, path)
    else:
        asset.media_type, asset.roles = pystac.MediaType.JSON, ["metadata"]


def describe_raster(asset: pystac.Asset, path: Path) -> None:
    """From the raster's own header: projection (``proj:code``/``proj:wkt2``, ``proj:shape`` [rows,
    cols], ``proj:transform`` [a, b, c, d, e, f], ``proj:bbox`` [left, bottom, right, top] in its
    CRS), STAC 1.1 ``bands`` (name, nodata, data type) and, for a class raster, its classes."""
    layer = read_layer("", path)
    projection = ProjectionExtension.ext(asset, add_if_missing=True)
    _apply_crs(projection, layer.crs)
    projection.shape = [layer.height, layer.width]
    projection.transform = [float(v) for v in list(layer.transform)[:6]]
    right, bottom = layer.transform @ (layer.width, layer.height)
    projection.bbox = [float(layer.transform.c), float(bottom), float(right), float(layer.transform.f)]
    asset.extra_fields["bands"] = [_band(layer, i) for i in range(layer.count)]
    if layer.colormap is not None:
        names = _class_names(layer.band_tags)
        classes = [Classification.create(value=i, name=_class_id(n), title=n,
                                         color_hint="".join(f"{c:02X}" for c in layer.colormap.get(i, (0, 0, 0))[:3]))
                   for i, n in enumerate(names)]
        if layer.nodata is not None and not math.isnan(layer.nodata):
            classes.append(Classification.create(value=int(layer.nodata), name="nodata", title="no data", nodata=True))
        ClassificationExtension.ext(asset, add_if_missing=True).classes = classes


def _band(layer: Any, index: int) -> dict[str, Any]:
    """One STAC 1.1 band object: name (the band description), nodata (``"nan"`` for NaN), data type."""
    band: dict[str, Any] = {"data_type": layer.dtype}
    name = layer.descriptions[index] if index < len(layer.descriptions) else None
    if name:
        band["name"] = name
    if layer.nodata is not None:
        band["nodata"] = "nan" if math.isnan(layer.nodata) else layer.nodata
    return band


def _class_names(band_tags: dict[str, str]) -> list[str]:
    """The class names of a class raster's band-1 metadata (:mod:`geo.class_names`), or ``[]``."""
    try:
        names = json.loads(band_tags.get("class_names", "[]"))
    except json.JSONDecodeError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def _class_id(name: str) -> str:
    """A classification ``name`` (letters, digits, ``-``, ``_``) from a class name: other runs become ``_``."""
    return CLASS_NAME.sub("_", name).strip("_") or "class"


def _describe_gpkg(asset: pystac.Asset, path: Path) -> None:
    """``proj:code`` and ``proj:bbox`` of a GeoPackage's layer (pyogrio, header only)."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        info = pyogrio.read_info(path, force_total_bounds=True)
    except (DataSourceError, DataLayerError, OSError) as e:
        raise RasterError(f"{path}: cannot read its layer ({one_line(e)})") from None
    projection = ProjectionExtension.ext(asset, add_if_missing=True)
    _apply_crs(projection, CRS.from_user_input(info["crs"]) if info.get("crs") else None)
    bounds = info.get("total_bounds")
    if bounds is not None and len(bounds) == 4 and all(math.isfinite(float(v)) for v in bounds):
        projection.bbox = [float(v) for v in bounds]


def mosaic_collection(mosaics: Sequence[Path], items: Sequence[pystac.Item]) -> pystac.Collection:
    """The Collection "mosaic": one asset per mosaic VRT (key = file name), extent over ``items``."""
    boxes = [item.bbox for item in items if item.bbox]
    spatial = [[min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                max(b[3] for b in boxes)]] if boxes else [[-180.0, -90.0, 180.0, 90.0]]
    starts = [item.datetime or item.common_metadata.start_datetime for item in items]
    ends = [item.datetime or item.common_metadata.end_datetime for item in items]
    start = min(starts) if all(starts) and UNKNOWN_START not in starts else None
    extent = pystac.Extent(pystac.SpatialExtent(spatial), pystac.TemporalExtent([[start, max(ends)]]))
    collection = pystac.Collection("mosaic", "Each raster product over all mapped inputs as one GDAL VRT layer "
                                             "(python -m geo.catalog; geo/mosaic.py): one per CRS, or one warped "
                                             "to the CRS asked for.", extent, title="Mosaics", license="other")
    for path in mosaics:
        asset = pystac.Asset(str(Path(path).resolve()))
        collection.add_asset(Path(path).name, asset)
        product = re.sub(r"_(EPSG-\d+|CRS-[0-9a-f]{8})$", "", Path(path).stem) + ".tif"
        title, description = PRODUCTS.get(product, (Path(path).stem, ""))
        asset.title = f"{title} mosaic ({Path(path).name})"
        asset.description = f"GDAL VRT over the inputs' {product}: {description}".rstrip(": ")
        asset.media_type, asset.roles = VRT_MEDIA_TYPE, ["data"]
        describe_raster(asset, Path(path))
    return collection


def validate_offline(catalog: pystac.Catalog) -> int:
    """Check the catalogue, its collections and items against the STAC core JSON schemas that pystac
    ships, without any download; returns the number of objects checked (0 when jsonschema is not
    installed). Extension fields are not checked (their schemas are not shipped).
    ``pystac.STACValidationError`` on the first invalid object."""
    try:
        import jsonschema
        from pystac.validation.local_validator import get_local_schema_cache
        from referencing import Registry, Resource
    except ImportError:
        return 0
    cache = get_local_schema_cache()
    registry = Registry().with_resources((uri, Resource.from_contents(schema)) for uri, schema in cache.items())
    objects: list[pystac.STACObject] = [catalog, *catalog.get_children(), *catalog.get_items(recursive=True)]
    for obj in objects:
        kind = {pystac.Item: "item", pystac.Collection: "collection"}.get(type(obj), "catalog")
        uri = f"https://schemas.stacspec.org/v{pystac.get_stac_version()}/{kind}-spec/json-schema/{kind}.json"
        schema = cache[uri]
        validator = jsonschema.validators.validator_for(schema)(schema, registry=registry)
        error = jsonschema.exceptions.best_match(validator.iter_errors(obj.to_dict(transform_hrefs=False)))
        if error is not None:
            raise pystac.STACValidationError(f"{obj.get_self_href()}: not a valid STAC {kind}: {error.message}")
    return len(objects)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m geo.catalog``."""
    p = argparse.ArgumentParser(
        prog="python -m geo.catalog",
        description="(Re)build the STAC catalogue (OUT/catalog.json, one item per mapped input) and the VRT mosaics "
                    "(OUT/mosaic/<product>.vrt) of a folder that python -m geo.map wrote.",
        epilog="Exit status: 0 when written, 2 when OUT is not a folder, nothing is mapped in it or the CRS is "
               "unknown.")
    p.add_argument("out", metavar="OUT", help="the output folder of python -m geo.map")
    p.add_argument("--mosaic-crs", default=None, metavar="CRS",
                   help="one mosaic per product in this CRS (e.g. EPSG:32632), other inputs warped (default: one "
                        "mosaic per product and CRS)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m geo.catalog``."""
    from model.core.cli import fail

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if not out.is_dir():
        fail(f"{out}: no such folder")
    result = publish_catalogue(out, args.mosaic_crs)
    if result["catalog"] is None:
        fail(f"{out}: nothing mapped here (no folder with a run.json of python -m geo.map)")
    print(f"catalogue: {result['catalog']} ({len(result['items'])} items)")
    for path in result["mosaics"]:
        print(f"mosaic: {path}")
    return 0


if __name__ == "__main__":
    from model.core.cli import run_cli

    sys.exit(run_cli(main))
