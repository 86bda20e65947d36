"""Open, validate, describe and read a GeoTIFF (or any GDAL raster) as RGB uint8 model tiles.

``open_raster`` checks everything that would make mapping fail or lie, once, up front, and turns it
into one-line :class:`geo.errors.RasterError` messages that start with the file: missing file, not a
raster, unreadable pixels, no georeferencing, a rotated or sheared geotransform, bands that do not
make an RGB image. :mod:`geo.tile_read` then reads model tiles from it (never the whole raster).

Band choice (1-based, in R, G, B order) when ``bands`` is not given: the bands whose colour
interpretation is red, green and blue (so a BGR(A) file comes out as RGB); otherwise bands 1-3 of a
3-band raster, or of a 4-band raster whose 4th band is alpha. Anything else needs ``bands=(r, g, b)``.
"""
from __future__ import annotations

import math
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Proj, Transformer
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from geo.errors import RasterError
from geo.scaling import Scaling, estimate_scaling, valid_pixels

T = TypeVar("T")
ROTATION_TOLERANCE = 1e-9  # |b|, |d| below this fraction of the pixel size count as zero
DISTORTION_TOLERANCE = 0.01  # projection scale off 1 by more than this is corrected in gsd_metres
PROBE_MAX_PIXELS = 2048 * 2048  # the overview probe reads at most this many pixels per band
DATA_PROBE_PIXELS = 1024 * 1024  # the nodata probe (has_valid_pixels) reads at most this many pixels per band
MAX_PIXEL_ASPECT = 20.0  # ground pixel sides differing more than this: a geographic CRS near a pole
RASTER_READ_ERRORS = (RasterioError, CPLE_BaseError)


class RasterSource:
    """An open raster ready for tiling: the rasterio ``dataset``, the ``bands`` (1-based R, G, B)
    to read and the ``alpha`` band (1-based, or None). Close it, or use it as a context manager."""

    def __init__(self, path: Path, dataset: rasterio.io.DatasetReader, bands: tuple[int, int, int],
                 alpha: int | None) -> None:
        self.path, self.dataset, self.bands, self.alpha = path, dataset, bands, alpha

    @property
    def width(self) -> int:
        """Columns of the raster, in pixels."""
        return self.dataset.width

    @property
    def height(self) -> int:
        """Rows of the raster, in pixels."""
        return self.dataset.height

    @property
    def transform(self) -> Affine:
        """Pixel (col, row) -> CRS (x, y) affine."""
        return self.dataset.transform

    @property
    def crs(self) -> rasterio.crs.CRS | None:
        """The raster's CRS, or None."""
        return self.dataset.crs

    @property
    def dtype(self) -> np.dtype:
        """Pixel dtype of the red band."""
        return np.dtype(self.dataset.dtypes[self.bands[0] - 1])

    @property
    def nodata(self) -> float | None:
        """Nodata value of the red band, or None."""
        return self.dataset.nodatavals[self.bands[0] - 1]

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self.dataset.closed

    @cached_property
    def all_valid(self) -> bool:
        """True when GDAL reports every pixel of the selected bands valid (no nodata value, no alpha
        band, no internal or per-dataset mask): reading masks can then be skipped."""
        flags = self.dataset.mask_flag_enums
        return all(flags[b - 1] == [MaskFlags.all_valid] for b in self.bands)

    @cached_property
    def overviews_exact(self) -> bool:
        """True when every overview of the red band is an exact reduction (the raster's width and
        height divide by its factor), so overview pixels line up with whole source pixels."""
        factors = self.dataset.overviews(self.bands[0])
        return all(self.width % f == 0 and self.height % f == 0 for f in factors)

    @cached_property
    def gsd(self) -> tuple[float, float]:
        """(x, y) pixel size in metres (see :func:`gsd_metres`)."""
        return gsd_metres(self)

    @cached_property
    def scaling(self) -> Scaling:
        """Stretch to uint8 for the selected bands, estimated once on first use."""
        return estimate_scaling(self, self.bands)

    def guarded_read(self, read: Callable[[], T], where: str = "") -> T:
        """Run a rasterio read; a GDAL/rasterio failure becomes a one-line RasterError."""
        try:
            return read()
        except RASTER_READ_ERRORS as e:
            raise RasterError(f"{self.path}: cannot read pixels{where} ({_reason(e)})") from None

    def close(self) -> None:
        """Close the dataset (idempotent)."""
        self.dataset.close()

    def __enter__(self) -> "RasterSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RasterSource({str(self.path)!r}, {self.width}x{self.height}, bands={self.bands})"


def open_raster(path: str | Path, bands: Sequence[int] | None = None, allow_ungeoreferenced: bool = False,
                allow_rotated: bool = False) -> RasterSource:
    """Open and validate a raster for RGB tiling; ``bands`` are 1-based (r, g, b) band numbers.

    Raises RasterError for: a missing file, a file GDAL cannot open, pixels that cannot be read
    (probed at the centre and in the smallest overview), no CRS or an identity geotransform (unless
    ``allow_ungeoreferenced``), a rotated or sheared geotransform (unless ``allow_rotated``),
    band choices that do not give R, G, B, complex pixels (radar data, not imagery), and pixels
    whose ground sides differ more than :data:`MAX_PIXEL_ASPECT` times (a geographic CRS at a pole).
    """
    path = Path(path)
    if not path.exists():
        raise RasterError(f"{path}: no such file")
    if path.is_dir():
        raise RasterError(f"{path}: is a directory, not a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RASTER_READ_ERRORS as e:
        raise RasterError(f"{path}: not a readable raster ({_reason(e)})") from None
    try:
        rgb, alpha = _select_bands(path, dataset, bands)
        _check_georeferencing(path, dataset, allow_ungeoreferenced, allow_rotated)
        _check_pixel_type(path, dataset, rgb)
        _check_pixel_shape(path, dataset)
        src = RasterSource(path, dataset, rgb, alpha)
        _probe_pixels(src)
    except BaseException:
        dataset.close()
        raise
    return src


def _select_bands(path: Path, ds: rasterio.io.DatasetReader,
                  bands: Sequence[int] | None) -> tuple[tuple[int, int, int], int | None]:
    """(r, g, b) band numbers and the alpha band number (rules in the module doc)."""
    interp = list(ds.colorinterp)
    alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
    if bands is not None:
        chosen = tuple(bands)
        if len(chosen) != 3 or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool)
                                       for b in chosen):
            raise RasterError(f"{path}: bands must be three 1-based band numbers (r, g, b), got {bands!r}")
        if not all(1 <= b <= ds.count for b in chosen):
            raise RasterError(f"{path}: bands={chosen} out of range; the raster has {ds.count} "
                              f"band{'s' if ds.count != 1 else ''} (1-based: 1..{ds.count})")
        return (int(chosen[0]), int(chosen[1]), int(chosen[2])), alpha
    named = [interp.count(c) == 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
    if all(named):
        rgb = tuple(interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue))
        return rgb, alpha  # type: ignore[return-value]
    if ds.count == 3 or (ds.count == 4 and alpha == 4):
        return (1, 2, 3), alpha
    kind = "alpha" if alpha else "no alpha"
    raise RasterError(f"{path}: {ds.count} band{'s' if ds.count != 1 else ''} ({kind}, no red/green/blue "
                      f"colour interpretation); need 3 bands (RGB) or 4 (RGB + alpha), or pick bands=(r, g, b)")


def _check_georeferencing(path: Path, ds: rasterio.io.DatasetReader, allow_ungeoreferenced: bool,
                          allow_rotated: bool) -> None:
    """RasterError for a raster without CRS / with an identity transform, or a rotated one."""
    t = ds.transform
    if (ds.crs is None or t.is_identity) and not allow_ungeoreferenced:
        what = "no CRS" if ds.crs is None else "an identity geotransform"
        hint = "; it has only ground control points, warp it first (gdalwarp)" if ds.gcps[0] else ""
        raise RasterError(f"{path}: not georeferenced ({what}){hint}; --allow-ungeoreferenced maps it in pixel units")
    if is_rotated(t) and not allow_rotated:
        raise RasterError(f"{path}: rotated or sheared geotransform (b={t.b:g}, d={t.d:g}); warp it "
                          f"north-up first (gdalwarp) or pass --allow-rotated")


def _check_pixel_type(path: Path, ds: rasterio.io.DatasetReader, bands: Sequence[int]) -> None:
    """RasterError for complex pixels: reading them as imagery would silently drop the imaginary part."""
    kinds = {ds.dtypes[b - 1] for b in bands}
    complex_kinds = sorted(k for k in kinds if np.issubdtype(np.dtype(k), np.complexfloating))
    if complex_kinds:
        raise RasterError(f"{path}: complex pixels ({', '.join(complex_kinds)}) are not RGB imagery; "
                          f"convert them to real values first (for example their amplitude)")


def _check_pixel_shape(path: Path, ds: rasterio.io.DatasetReader) -> None:
    """RasterError when one pixel's ground sides (metres, :func:`gsd_metres`) are zero, not finite
    or differ more than :data:`MAX_PIXEL_ASPECT` times: a geographic CRS close to a pole, where a
    degree of longitude shrinks to nothing. Tiles of a fixed ground size cannot be cut from it."""
    try:
        gx, gy = gsd_metres(ds)
    except Exception as e:  # noqa: BLE001 - pyproj raises many types
        raise RasterError(f"{path}: cannot measure its pixels on the ground ({_reason(e)})") from None
    ok = all(math.isfinite(g) and g > 0 for g in (gx, gy)) and max(gx, gy) <= MAX_PIXEL_ASPECT * min(gx, gy)
    if ok:
        return
    where = ""
    if ds.crs is not None and ds.crs.is_geographic:
        lat = max(abs(ds.bounds.bottom), abs(ds.bounds.top))
        where = f" at latitude {min(lat, 90.0):.4g} degrees in a geographic CRS (near a pole)"
    raise RasterError(f"{path}: a pixel is {gx:.3g} m x {gy:.3g} m on the ground{where}; reproject it to a "
                      f"projected CRS first (gdalwarp; near a pole e.g. EPSG:3413 or EPSG:3031)")


def is_rotated(t: Affine) -> bool:
    """True when the geotransform has rotation or shear terms (b or d) beyond float noise."""
    size = max(abs(t.a), abs(t.e), abs(t.b), abs(t.d))
    return abs(t.b) > ROTATION_TOLERANCE * size or abs(t.d) > ROTATION_TOLERANCE * size


def _probe_pixels(src: RasterSource) -> None:
    """Read a 1x1 window at the centre and the whole smallest overview (cheap): a corrupt file
    fails here instead of half-way through a mapping run. An overview of more than
    ``PROBE_MAX_PIXELS`` (a header can claim any size) is not read: the size limit of
    ``geo.map`` judges such a raster before any of it is read."""
    ds, bands = src.dataset, list(src.bands)
    centre = Window(ds.width // 2, ds.height // 2, 1, 1)
    src.guarded_read(lambda: ds.read(bands, window=centre), " at the centre")
    factors = ds.overviews(bands[0])
    f = max(factors, default=0)
    shape = (len(bands), math.ceil(ds.height / f), math.ceil(ds.width / f)) if f else (0, 0, 0)
    if f and shape[1] * shape[2] <= PROBE_MAX_PIXELS:
        src.guarded_read(lambda: ds.read(bands, out_shape=shape, resampling=Resampling.nearest),
                         f" of the 1/{f} overview")


def gsd_metres(src: RasterSource | rasterio.io.DatasetReader) -> tuple[float, float]:
    """Ground sample distance (x, y) in metres per pixel.

    - Projected CRS: pixel size ``hypot(a, d)``, ``hypot(b, e)`` times the CRS linear unit factor
      (e.g. 0.3048006 m per US survey foot). Where the projection's point scale ``k`` at the scene
      centre is off 1 by more than 1 % (Web Mercator away from the equator), the size is divided by
      ``k`` (parallel scale for x, meridional for y) to give metres on the ground.
    - Geographic CRS: the geodesic length (pyproj.Geod on the CRS ellipsoid) of a one-pixel step
      along each pixel axis, centred on the scene centre.
    - No CRS: the transform's pixel size, taken to be metres.
    """
    ds = src.dataset if isinstance(src, RasterSource) else src
    t = ds.transform
    size_x, size_y = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    if ds.crs is None:
        return size_x, size_y
    crs = ProjCRS.from_wkt(ds.crs.to_wkt())
    cx, cy = t @ (ds.width / 2, ds.height / 2)
    if crs.is_geographic:
        return _geographic_gsd(crs, t, cx, cy)
    unit = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
    gx, gy = size_x * unit, size_y * unit
    k_x, k_y = _point_scale(crs, cx, cy)
    if abs(k_x - 1) > DISTORTION_TOLERANCE or abs(k_y - 1) > DISTORTION_TOLERANCE:
        gx, gy = gx / k_x, gy / k_y
    return gx, gy


def _geographic_gsd(crs: ProjCRS, t: Affine, cx: float, cy: float) -> tuple[float, float]:
    """Geodesic metres of one pixel step along x (a, d) and y (b, e) at (cx, cy) in the CRS's
    angular unit, after converting that unit to degrees."""
    deg = math.degrees(float(crs.axis_info[0].unit_conversion_factor)) if crs.axis_info else 1.0
    geod = crs.get_geod()

    def step(dx: float, dy: float) -> float:
        lon0, lat0 = (cx - dx / 2) * deg, (cy - dy / 2) * deg
        lon1, lat1 = (cx + dx / 2) * deg, (cy + dy / 2) * deg
        return float(geod.inv(lon0, lat0, lon1, lat1)[2])

    return step(t.a, t.d), step(t.b, t.e)


def _point_scale(crs: ProjCRS, x: float, y: float) -> tuple[float, float]:
    """(parallel, meridional) scale factors of the projection at CRS point (x, y); (1, 1) when
    pyproj cannot tell."""
    try:
        lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
        f = Proj(crs).get_factors(lon, lat)
        k_x, k_y = float(f.parallel_scale), float(f.meridional_scale)
    except Exception:  # noqa: BLE001 - pyproj raises many types; distortion is then unknown
        return 1.0, 1.0
    if not (math.isfinite(k_x) and math.isfinite(k_y) and k_x > 0 and k_y > 0):
        return 1.0, 1.0
    return k_x, k_y


def describe(src: RasterSource) -> dict[str, Any]:
    """JSON-ready facts about the source (for run.json); transform as [a, b, c, d, e, f]."""
    ds = src.dataset
    return {
        "path": str(src.path),
        "width": ds.width, "height": ds.height,
        "crs_wkt": ds.crs.to_wkt() if ds.crs else None,
        "epsg": ds.crs.to_epsg() if ds.crs else None,
        "transform": list(ds.transform)[:6],
        "gsd_m": list(src.gsd),
        "dtype": str(src.dtype),
        "count": ds.count,
        "bands": list(src.bands),
        "nodata": _json_number(ds.nodata),
        "has_alpha": src.alpha is not None,
        "alpha_band": src.alpha,
        "overviews": list(ds.overviews(src.bands[0])),
    }


def has_valid_pixels(src: RasterSource, max_pixels: int = DATA_PROBE_PIXELS) -> bool:
    """Whether any pixel of the selected bands is valid (``geo.scaling.valid_pixels``: a mask that
    is not nodata, finite values), judged on one nearest-neighbour read of at most ``max_pixels``
    pixels per band (GDAL takes it from an overview when the raster has one, so it stays cheap).

    Exact for a raster of at most ``max_pixels`` pixels; a larger one is decimated by
    ``sqrt(width * height / max_pixels)`` pixels per side, so a valid patch narrower than that
    step may be missed and the raster taken for empty (about 8 px for 200 MB of uncompressed RGB).
    RasterError (one line) when it cannot be read."""
    ds, bands = src.dataset, list(src.bands)
    step = max(1.0, math.sqrt(ds.width * ds.height / max_pixels))
    shape = (len(bands), max(1, math.floor(ds.height / step)), max(1, math.floor(ds.width / step)))
    data = src.guarded_read(lambda: ds.read(bands, out_shape=shape, resampling=Resampling.nearest),
                            " of the nodata probe")
    masks = src.guarded_read(lambda: ds.read_masks(bands, out_shape=shape, resampling=Resampling.nearest),
                             " of the nodata probe")
    return bool(valid_pixels(data, masks).any())


def _json_number(value: float | None) -> float | str | None:
    """Nodata for JSON: NaN / inf as strings (JSON has no NaN)."""
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _reason(e: BaseException) -> str:
    """The most specific one-line reason of a rasterio/GDAL error (its GDAL cause when chained)."""
    cause = e.__cause__ or e.__context__
    text = str(cause) if cause is not None and str(cause) else str(e)
    return " ".join(text.split())
