"""VRT mosaics of what ``python -m geo.map`` mapped into one output folder: one layer per product.

``write_mosaics(OUT)`` writes ``OUT/mosaic/<product>.vrt`` for each raster product
(``landcover``, ``soundscape``, ``soundscape_scores``, ``embeddings``) over every input mapped in
``OUT`` (a folder ``OUT/<stem>/`` with a ``run.json``: :func:`mapped_runs`), so that QGIS (or
any GDAL reader) opens a whole region as one layer. The VRTs are GDAL XML written here (GDAL's
``gdalbuildvrt`` is a CLI that rasterio does not expose):

- **One CRS per VRT.** When every input shares one CRS, the VRT is ``<product>.vrt``; otherwise
  there is one VRT per CRS, ``<product>_EPSG-<code>.vrt`` (``<product>_CRS-<hash>.vrt`` for a CRS
  without an EPSG code), each over the inputs in that CRS. ``write_mosaics(OUT, crs="EPSG:xxxx")``
  writes one ``<product>.vrt`` in that CRS instead: inputs in other CRSs are warped by a GDAL warped
  VRT per input and product (``OUT/mosaic/warped/<stem>/<product>.vrt``; nearest neighbour for
  class products, bilinear for continuous ones), on the mosaic's own pixel grid, so they are
  resampled once.
- **One resolution per VRT**: the pixel size of the input whose pixels are smallest (by area,
  ``|a| * |e|`` of its transform), with the grid anchored on that input's origin. Warped to
  ``crs``, only the inputs already in ``crs`` are candidates; when none is, the pixel size GDAL's
  suggested warp gives each input in ``crs`` (about as many pixels as the input) is used. Inputs on that grid (the same
  pixel size, origins whole pixels apart) are copied pixel for pixel; others are resampled by the
  VRT (nearest for classes, bilinear for continuous values).
- **Classes vs values**: a product whose band 1 has a colour table (palette) or an integer data
  type is categorical (nearest), a float product continuous (bilinear).
- Each band keeps the products' nodata, description, and for class products the colour table and
  the class names (band-1 metadata, :mod:`geo.class_names`); dataset metadata that every input
  agrees on (e.g. ``geoaudio_bundle_hash`` of the embeddings) is kept too. Sources are ``ComplexSource``
  with the nodata value, so where inputs overlap, nodata never hides data, and the input later by
  name is drawn on top.
- **Relative paths** (``relativeToVRT="1"``): ``OUT`` can be moved, copied or served as a whole.

Products that cannot share one layer (different band counts, data types or class names, e.g.
inputs mapped with different bundles) are reported in one line each and skipped, as are products
without a CRS or with a rotated grid. Every file is written atomically (:mod:`model.core.atomic`);
``OUT/mosaic/`` belongs to this module: the VRTs of an earlier call that this call does not write
are deleted.

:func:`mapped_runs` (which folders of ``OUT`` hold a finished run) is shared with :mod:`geo.catalog`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform

from geo.errors import RasterError
from geo.runinfo import RUN_FILE
from model.core.atomic import atomic_path, write_text_atomic
from model.core.errors import one_line

MOSAIC_DIR = "mosaic"  # OUT/mosaic/<product>.vrt
WARPED_DIR = "warped"  # OUT/mosaic/warped/<stem>/<product>.vrt: an input warped to the asked CRS
GRID_EPS = 1e-6  # pixels: offsets and sizes this close to a whole number are taken as whole
GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "uint64": "UInt64", "int64": "Int64", "float32": "Float32", "float64": "Float64"}

Report = Callable[[str], None]  # receives one line per problem


def warn(message: str) -> None:
    """The default :data:`Report`: ``warning: <message>`` on stderr."""
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class MappedRun:
    """One finished mapping run in ``OUT``: ``OUT/<stem>/`` and its parsed run.json (``info``)."""

    stem: str
    folder: Path
    info: dict[str, Any]

    def products(self) -> list[str]:
        """The product file names run.json lists that exist in the folder."""
        return [str(n) for n in self.info.get("products") or [] if (self.folder / str(n)).is_file()]

    def raster_products(self) -> list[str]:
        """The GeoTIFF products (``*.tif``) among :meth:`products`."""
        return [n for n in self.products() if n.lower().endswith((".tif", ".tiff"))]


def mapped_runs(out_root: Path, report: Report = warn) -> list[MappedRun]:
    """The finished runs in ``out_root``, sorted by folder name: every subfolder with a ``run.json``
    (:mod:`geo.runinfo`; a run being mapped or published has none yet). Folders without one
    (``mosaic/``, ``stac/``, a failed input) are passed over; a run.json that cannot be read or is
    not a geo.map record is reported in one line and its folder skipped."""
    runs = []
    for folder in sorted(p for p in Path(out_root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = folder / RUN_FILE
        if not path.is_file():
            continue
        try:
            info = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            report(f"{path}: unreadable run.json ({one_line(e)}); {folder.name} left out of the catalogue and mosaics")
            continue
        if not (isinstance(info, dict) and isinstance(info.get("input"), dict)
                and isinstance(info.get("products"), list)):
            report(f"{path}: not a geo.map run.json (no input or products); {folder.name} left out of the catalogue "
                   f"and mosaics")
            continue
        runs.append(MappedRun(folder.name, folder, info))
    return runs


@dataclass(frozen=True)
class Layer:
    """The header of one product file of one input: all a mosaic needs (no pixel is read)."""

    stem: str
    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    descriptions: tuple[str | None, ...]
    colormap: dict[int, tuple[int, ...]] | None
    band_tags: dict[str, str]
    tags: dict[str, str]
    block: tuple[int, int]

    @property
    def res(self) -> tuple[float, float]:
        """Pixel width and height in CRS units (positive)."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def categorical(self) -> bool:
        """Class values (palette or integer data type): resampled with nearest neighbour."""
        return self.colormap is not None or np.dtype(self.dtype).kind in "iu"

    @property
    def layout(self) -> tuple[int, str, str | None]:
        """What must agree for files to be one layer: band count, data type, class names."""
        return self.count, self.dtype, self.band_tags.get("class_names")


def read_layer(stem: str, path: Path) -> Layer:
    """The header of a product file (RasterError, one line, when GDAL cannot open it)."""
    try:
        with rasterio.open(path) as ds:
            colormap = None
            if ds.colorinterp and ds.colorinterp[0] == ColorInterp.palette:
                colormap = {int(k): tuple(int(c) for c in v) for k, v in ds.colormap(1).items()}
            return Layer(stem, Path(path), ds.width, ds.height, ds.count, ds.dtypes[0], ds.crs, ds.transform,
                         ds.nodata, tuple(ds.descriptions), colormap, dict(ds.tags(1)), dict(ds.tags()),
                         tuple(ds.block_shapes[0]))
    except RasterioError as e:
        raise RasterError(f"{path}: cannot read its header ({one_line(e)})") from None


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: CRS, transform (pixel width ``a`` > 0, height ``e`` < 0) and size."""

    crs: CRS
    transform: Affine
    width: int
    height: int


@dataclass(frozen=True)
class Placed:
    """A layer as a mosaic sees it: the file to read (the product itself, or its warped VRT), its
    footprint on the mosaic's CRS (``transform``, ``width``, ``height`` of that file) and that
    file's block shape (rows, cols)."""

    layer: Layer
    path: Path
    transform: Affine
    width: int
    height: int
    block: tuple[int, int]

    @classmethod
    def native(cls, layer: Layer) -> Placed:
        """The product file itself, in its own CRS and grid."""
        return cls(layer, layer.path, layer.transform, layer.width, layer.height, layer.block)


def write_mosaics(out_root: Path, crs: str | None = None, runs: Sequence[MappedRun] | None = None,
                  report: Report = warn) -> list[Path]:
    """Write ``out_root/mosaic/<product>.vrt`` per raster product and CRS (or warped to ``crs``,
    e.g. ``"EPSG:32632"``; see the module doc); returns the VRTs written, sorted. ``runs``: the
    finished runs (default :func:`mapped_runs`). RasterError (one line) for a ``crs`` GDAL does not
    know; problems with single products are reported through ``report`` and skipped."""
    out_root = Path(out_root)
    target = _parse_crs(crs) if crs else None
    runs = mapped_runs(out_root, report) if runs is None else runs
    folder = out_root / MOSAIC_DIR
    layers = _layers_by_product(runs, report)
    written: list[Path] = []
    warped: list[Path] = []
    if layers:
        folder.mkdir(exist_ok=True)
    for product, found in sorted(layers.items()):
        usable = [layer for layer in found if _usable(layer, report)]
        if target is not None:
            written += _write_warped_mosaic(folder, product, usable, target, warped, report)
        else:
            written += _write_crs_mosaics(folder, product, usable, report)
    _remove_stale(folder, set(written) | set(warped))
    return sorted(written)


def _parse_crs(text: str) -> CRS:
    """A CRS from user text (``EPSG:32632``, WKT, PROJ); RasterError when GDAL does not know it."""
    try:
        return CRS.from_user_input(text)
    except CRSError as e:
        raise RasterError(f"--mosaic-crs {text!r}: not a CRS GDAL knows ({one_line(e)})") from None


def _layers_by_product(runs: Sequence[MappedRun], report: Report) -> dict[str, list[Layer]]:
    """``{product file name: [Layer of each run that has it]}``; unreadable files are reported."""
    found: dict[str, list[Layer]] = {}
    for run in runs:
        for name in run.raster_products():
            try:
                found.setdefault(name, []).append(read_layer(run.stem, run.folder / name))
            except RasterError as e:
                report(f"{e}; left out of the mosaic")
    return found


def _usable(layer: Layer, report: Report) -> bool:
    """Whether a layer can be placed in a mosaic (a CRS, a north-up grid); else reported."""
    if layer.crs is None:
        report(f"{layer.path}: no CRS; left out of the mosaic")
        return False
    t = layer.transform
    if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
        report(f"{layer.path}: rotated or flipped grid; left out of the mosaic")
        return False
    return True


def crs_label(crs: CRS) -> str:
    """``EPSG-<code>``, or ``CRS-<8 hex digits of the WKT's SHA-1>`` for a CRS without an EPSG code."""
    code = crs.to_epsg()
    return f"EPSG-{code}" if code else f"CRS-{hashlib.sha1(crs.to_wkt().encode()).hexdigest()[:8]}"


def _write_crs_mosaics(folder: Path, product: str, layers: list[Layer], report: Report) -> list[Path]:
    """One VRT per CRS of ``layers`` (named ``<product>.vrt`` when there is only one CRS)."""
    groups: dict[str, list[Layer]] = {}
    for layer in layers:
        groups.setdefault(crs_label(layer.crs), []).append(layer)
    stem = Path(product).stem
    written = []
    for label, group in sorted(groups.items()):
        path = folder / (f"{stem}.vrt" if len(groups) == 1 else f"{stem}_{label}.vrt")
        if not _compatible(path, group, report):
            continue
        grid = _grid(group[0].crs, [(layer.transform, layer.width, layer.height) for layer in group])
        placed = [Placed.native(layer) for layer in group]
        written.append(_write_vrt(path, grid, placed))
    return written


def _write_warped_mosaic(folder: Path, product: str, layers: list[Layer], target: CRS, warped: list[Path],
                         report: Report) -> list[Path]:
    """One VRT of ``layers`` in ``target``: inputs in other CRSs through a warped VRT each (appended
    to ``warped``)."""
    path = folder / f"{Path(product).stem}.vrt"
    if not layers or not _compatible(path, layers, report):
        return []
    kept, footprints = [], []
    for layer in layers:
        try:
            footprints.append(_footprint_in(layer, target))
        except (RasterioError, CRSError) as e:
            report(f"{layer.path}: cannot be warped to {crs_label(target)} ({one_line(e)}); left out of the mosaic")
            continue
        kept.append(layer)
    if not kept:
        return []
    layers = kept
    native = [f for layer, f in zip(layers, footprints) if layer.crs == target]
    grid = _grid(target, footprints, native)  # a warp's suggested pixel size is only an estimate
    placed = []
    for layer, footprint in zip(layers, footprints):
        if layer.crs == target:
            placed.append(Placed.native(layer))
        else:
            transform, width, height = _subgrid(grid, footprint)
            file = folder / WARPED_DIR / layer.stem / f"{Path(product).stem}.vrt"
            block = _write_warped(layer, file, target, transform, width, height)
            warped.append(file)
            placed.append(Placed(layer, file, transform, width, height, block))
    return [_write_vrt(path, grid, placed)]


def _compatible(path: Path, layers: list[Layer], report: Report) -> bool:
    """Whether ``layers`` can be one layer (same band count, data type, class names); else one line."""
    first = layers[0]
    for layer in layers[1:]:
        if layer.layout == first.layout:
            continue
        if layer.count != first.count:
            why = f"{first.count} bands in {first.stem}, {layer.count} in {layer.stem}"
        elif layer.dtype != first.dtype:
            why = f"{first.dtype} in {first.stem}, {layer.dtype} in {layer.stem}"
        else:
            why = f"other class names in {layer.stem} than in {first.stem}"
        report(f"{path}: not written: {first.path.name} differs between inputs ({why}); such files cannot be one "
               f"layer")
        return False
    return True


def _footprint_in(layer: Layer, target: CRS) -> tuple[Affine, int, int]:
    """The layer's grid in ``target``: its own when it is in ``target``, else GDAL's suggested warp
    (:func:`rasterio.warp.calculate_default_transform`: about the same number of pixels)."""
    if layer.crs == target:
        return layer.transform, layer.width, layer.height
    left, top = layer.transform @ (0, 0)
    right, bottom = layer.transform @ (layer.width, layer.height)
    transform, width, height = calculate_default_transform(layer.crs, target, layer.width, layer.height,
                                                           left=left, bottom=bottom, right=right, top=top)
    return transform, int(width), int(height)


def _grid(crs: CRS, footprints: Sequence[tuple[Affine, int, int]],
          candidates: Sequence[tuple[Affine, int, int]] | None = None) -> Grid:
    """The mosaic grid over ``footprints`` (transform, width, height in ``crs``): the pixel size and
    origin of the footprint among ``candidates`` (default: all) with the smallest pixels
    (``|a| * |e|``), extended by whole pixels to cover the union of all footprints."""
    finest = min(candidates or footprints, key=lambda f: abs(f[0].a * f[0].e))[0]
    rx, ry = abs(finest.a), abs(finest.e)
    ax, ay = finest.c, finest.f
    lefts, rights, tops, bottoms = [], [], [], []
    for transform, width, height in footprints:
        x0, y0 = transform @ (0, 0)
        x1, y1 = transform @ (width, height)
        lefts.append(min(x0, x1)), rights.append(max(x0, x1)), tops.append(max(y0, y1)), bottoms.append(min(y0, y1))
    x0 = ax + math.floor((min(lefts) - ax) / rx + GRID_EPS) * rx
    y0 = ay + math.ceil((max(tops) - ay) / ry - GRID_EPS) * ry
    width = max(1, math.ceil((max(rights) - x0) / rx - GRID_EPS))
    height = max(1, math.ceil((y0 - min(bottoms)) / ry - GRID_EPS))
    return Grid(crs, Affine(rx, 0.0, x0, 0.0, -ry, y0), width, height)


def _subgrid(grid: Grid, footprint: tuple[Affine, int, int]) -> tuple[Affine, int, int]:
    """The smallest window of ``grid`` (transform, width, height) covering ``footprint``."""
    transform, width, height = footprint
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (width, height)
    inverse = ~grid.transform
    cols = sorted(c for c, _ in (inverse @ (x0, y0), inverse @ (x1, y1)))
    rows = sorted(r for _, r in (inverse @ (x0, y0), inverse @ (x1, y1)))
    c0, r0 = math.floor(cols[0] + GRID_EPS), math.floor(rows[0] + GRID_EPS)
    c1, r1 = math.ceil(cols[1] - GRID_EPS), math.ceil(rows[1] - GRID_EPS)
    return grid.transform @ Affine.translation(c0, r0), max(1, c1 - c0), max(1, r1 - r0)


def _write_warped(layer: Layer, path: Path, target: CRS, transform: Affine, width: int,
                  height: int) -> tuple[int, int]:
    """Write a GDAL warped VRT of ``layer`` on (``transform``, ``width``, ``height``) in ``target`` at
    ``path`` (nearest for classes, bilinear otherwise), its source path made relative to it;
    returns its block shape (rows, cols)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    resampling = Resampling.nearest if layer.categorical else Resampling.bilinear
    with atomic_path(path) as tmp:
        tmp.unlink()
        with rasterio.open(layer.path) as src, WarpedVRT(src, crs=target, transform=transform, width=width,
                                                         height=height, resampling=resampling) as vrt:
            rasterio.shutil.copy(vrt, tmp, driver="VRT")
            block = tuple(vrt.block_shapes[0])
        root = ET.parse(tmp).getroot()
        for source in root.iter("SourceDataset"):
            source.set("relativeToVRT", "1")
            source.text = _relative(layer.path, path.parent)
        tmp.write_text(ET.tostring(root, encoding="unicode") + "\n")
    return block


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder``, with forward slashes (as VRTs write them on every system)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()


def _write_vrt(path: Path, grid: Grid, placed: Sequence[Placed]) -> Path:
    """Write the mosaic VRT of ``placed`` sources on ``grid`` atomically; returns ``path``."""
    first = placed[0].layer
    root = ET.Element("VRTDataset", rasterXSize=str(grid.width), rasterYSize=str(grid.height))
    ET.SubElement(root, "SRS").text = grid.crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in grid.transform.to_gdal())
    _metadata(root, _common_tags([p.layer.tags for p in placed]))
    for band in range(1, first.count + 1):
        element = ET.SubElement(root, "VRTRasterBand", dataType=GDAL_TYPES[first.dtype], band=str(band))
        _band_header(element, first, band)
        for item in placed:
            _source(element, item, band, grid, path.parent)
    ET.indent(root)
    write_text_atomic(path, ET.tostring(root, encoding="unicode") + "\n")
    return path


def _common_tags(tags: Sequence[dict[str, str]]) -> dict[str, str]:
    """The dataset metadata items every input has with the same value."""
    common = dict(tags[0])
    for other in tags[1:]:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return common


def _metadata(element: ET.Element, items: dict[str, str]) -> None:
    """A ``<Metadata>`` child of ``element`` with one ``<MDI>`` per item (none when empty)."""
    if items:
        metadata = ET.SubElement(element, "Metadata")
        for key, value in sorted(items.items()):
            ET.SubElement(metadata, "MDI", key=key).text = value


def _band_header(element: ET.Element, layer: Layer, band: int) -> None:
    """Nodata, description, and for band 1 of a class product the colour table and class names."""
    if layer.nodata is not None:
        ET.SubElement(element, "NoDataValue").text = _number(layer.nodata)
    description = layer.descriptions[band - 1] if band <= len(layer.descriptions) else None
    if description:
        ET.SubElement(element, "Description").text = description
    if band == 1:
        _metadata(element, layer.band_tags)
        if layer.colormap is not None:
            ET.SubElement(element, "ColorInterp").text = "Palette"
            table = ET.SubElement(element, "ColorTable")
            for value in range(max(layer.colormap) + 1):
                rgba = tuple(layer.colormap.get(value, (0, 0, 0, 0)))
                ET.SubElement(table, "Entry", c1=str(rgba[0]), c2=str(rgba[1]), c3=str(rgba[2]), c4=str(rgba[3]))


def _number(value: float) -> str:
    """A nodata value as GDAL writes it in a VRT (``nan`` for NaN, integers without a point)."""
    if math.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _source(element: ET.Element, item: Placed, band: int, grid: Grid, vrt_folder: Path) -> None:
    """A ``<ComplexSource>`` of ``item``'s band ``band`` at its place on ``grid``: whole-pixel
    offsets and sizes are written as integers (a pixel-for-pixel copy), others as they are (GDAL
    resamples: nearest for classes, bilinear otherwise); the nodata value is transparent."""
    layer = item.layer
    source = ET.SubElement(element, "ComplexSource",
                           resampling="nearest" if layer.categorical else "bilinear")
    ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = _relative(item.path, vrt_folder)
    ET.SubElement(source, "SourceBand").text = str(band)
    ET.SubElement(source, "SourceProperties", RasterXSize=str(item.width), RasterYSize=str(item.height),
                  DataType=GDAL_TYPES[layer.dtype], BlockXSize=str(item.block[1]), BlockYSize=str(item.block[0]))
    ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(item.width), ySize=str(item.height))
    inverse = ~grid.transform
    col, row = inverse @ (item.transform.c, item.transform.f)
    end_col, end_row = inverse @ (item.transform @ (item.width, item.height))
    ET.SubElement(source, "DstRect", xOff=_offset(col), yOff=_offset(row), xSize=_offset(end_col - col),
                  ySize=_offset(end_row - row))
    if layer.nodata is not None:
        ET.SubElement(source, "NODATA").text = _number(layer.nodata)


def _offset(value: float) -> str:
    """A pixel offset or size: a whole number when within GRID_EPS of one, else full precision."""
    nearest = round(value)
    return str(int(nearest)) if abs(value - nearest) < GRID_EPS else repr(float(value))


def _remove_stale(folder: Path, keep: set[Path]) -> None:
    """Delete what an earlier call wrote in ``folder`` (``OUT/mosaic/``) that this call did not: the
    ``*.vrt`` directly in it and every file under ``warped/`` not in ``keep``, then empty folders."""
    if not folder.is_dir():
        return
    for path in folder.glob("*.vrt"):
        if path not in keep:
            path.unlink(missing_ok=True)
    warped = folder / WARPED_DIR
    if not warped.is_dir():
        return
    for path in sorted(warped.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path not in keep:
            path.unlink(missing_ok=True)
    if not any(warped.iterdir()):
        warped.rmdir()
