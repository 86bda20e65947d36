"""geo.raster / geo.scaling: opening, validation, GSD, tile reads and dtype scaling on real GeoTIFFs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from geo.errors import RasterError
from geo.raster import describe, gsd_metres, open_raster
from geo.tile_read import read_tile, read_tiles
from geo.scaling import Scaling, apply, estimate_scaling

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "geotiff"
UTM = "EPSG:32618"


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """North-up affine (rasterio's helper of the same name, without its deprecation warning)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def write_tif(path: Path, data: np.ndarray, crs: str | None = UTM,
              transform: Affine | None = from_origin(500000, 4000000, 1.0, 1.0), **profile) -> Path:
    """A small GeoTIFF of band-first ``data``."""
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=data.dtype, crs=crs, transform=transform, **profile) as dst:
        dst.write(data)
    return path


def ramp(count: int, height: int, width: int, dtype: str = "uint8") -> np.ndarray:
    """Distinct, smooth values per band: 10 * band + row + col (clipped to 255 for uint8)."""
    b, r, c = np.meshgrid(np.arange(count), np.arange(height), np.arange(width), indexing="ij")
    values = 10 * b + r + c
    return np.minimum(values, 255).astype(dtype) if dtype == "uint8" else values.astype(dtype)


# --- the shared real files -------------------------------------------------------------------------

def test_rgb_byte_facts():
    with open_raster(DATA / "RGB.byte.tif") as src:
        assert (src.width, src.height, src.bands, src.alpha) == (791, 718, (1, 2, 3), None)
        assert src.gsd == pytest.approx((300.0379266750948, 300.041782729805), rel=1e-9)
        d = describe(src)
        assert d["epsg"] == 32618 and d["nodata"] == 0 and d["dtype"] == "uint8"
        assert d["has_alpha"] is False and d["gsd_m"][0] == pytest.approx(300.038, abs=1e-3)
        assert d["transform"] == pytest.approx([300.0379266750948, 0, 101985.0, 0, -300.041782729805, 2826915.0])
        json.dumps(d)  # run.json-ready
        assert src.scaling.method == "identity"
    assert src.closed


def test_rgb_byte_nodata_is_invalid_and_interior_is_exact():
    with open_raster(DATA / "RGB.byte.tif") as src:
        corner, corner_valid = read_tile(src, Window(0, 0, 32, 32), 32)  # nodata 0 around the footprint
        assert not corner_valid.any() and not corner.any()
        rgb, valid = read_tile(src, Window(380, 330, 32, 32), 32)
        direct = src.dataset.read(window=Window(380, 330, 32, 32)).transpose(1, 2, 0)
        assert valid.all() and np.array_equal(rgb, direct)


def test_rgba_uint16_alpha_band_order_and_percentile_scaling():
    with open_raster(DATA / "RGBA.uint16.tif") as src:
        # colour interpretation is blue, green, red, alpha: read as R, G, B
        assert src.bands == (3, 2, 1) and src.alpha == 4 and describe(src)["has_alpha"]
        s = src.scaling
        assert (s.method, s.source) == ("percentile", "sample")  # no overviews: decimated sample
        assert s.pixels == int((src.dataset.read(4) > 0).sum())  # only pixels with alpha > 0 counted
        assert s.low == pytest.approx((9999.5,) * 3) and s.high == pytest.approx((10000.5,) * 3)  # constant
        rgb, valid = read_tile(src, Window(0, 0, 634, 411), 634)  # 1:1 in x, so alpha maps 1:1
        alpha = src.dataset.read(4, out_shape=(634, 634), resampling=Resampling.nearest) > 0
        assert np.array_equal(valid, alpha) and 0.3 < valid.mean() < 0.7
        assert (rgb[valid] == 128).all() and (rgb[~valid] == 0).all()


def test_all_nodata_tiles_are_all_invalid():
    with open_raster(DATA / "all-nodata.tif") as src:
        assert src.bands == (3, 2, 1)  # B, G, R, undefined
        windows = [Window(0, r, 64, 64) for r in range(0, 2475, 500)]
        rgb, valid = read_tiles(src, windows, 32)
        assert rgb.shape == (5, 32, 32, 3) and valid.shape == (5, 32, 32)
        assert not valid.any() and not rgb.any()
        assert src.scaling.pixels == 0


def test_corrupt_file_raises_naming_the_file():
    path = DATA / "corrupt.tif"
    with pytest.raises(RasterError) as err:
        open_raster(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "cannot read pixels" in message and "\n" not in message


# --- validation ------------------------------------------------------------------------------------

def test_missing_and_not_a_raster(tmp_path):
    with pytest.raises(RasterError, match=r"nope\.tif: no such file"):
        open_raster(tmp_path / "nope.tif")
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(RasterError, match=r"notes\.tif: not a readable raster"):
        open_raster(text)
    with pytest.raises(RasterError, match="is a directory"):
        open_raster(tmp_path)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_ungeoreferenced_needs_allow_flag(tmp_path):
    path = write_tif(tmp_path / "plain.tif", ramp(3, 8, 8), crs=None, transform=Affine.identity())
    with pytest.raises(RasterError, match=r"plain\.tif: not georeferenced \(no CRS\)"):
        open_raster(path)
    with open_raster(path, allow_ungeoreferenced=True) as src:
        assert src.gsd == (1.0, 1.0)  # pixel units, taken as metres
    identity = write_tif(tmp_path / "identity.tif", ramp(3, 8, 8), transform=Affine.identity())
    with pytest.raises(RasterError, match="identity geotransform"):
        open_raster(identity)


def test_rotated_needs_allow_flag(tmp_path):
    rotated = from_origin(500000, 4000000, 2.0, 2.0) @ Affine.rotation(30)
    path = write_tif(tmp_path / "rotated.tif", ramp(3, 8, 8), transform=rotated)
    with pytest.raises(RasterError, match=r"rotated\.tif: rotated or sheared"):
        open_raster(path)
    with open_raster(path, allow_rotated=True) as src:
        assert src.gsd == pytest.approx((2.0, 2.0))  # pixel size along the rotated axes


def test_band_rules(tmp_path):
    one = write_tif(tmp_path / "one.tif", ramp(1, 8, 8))
    with pytest.raises(RasterError, match=r"one\.tif: 1 band .*bands=\(r, g, b\)"):
        open_raster(one)
    with open_raster(one, bands=(1, 1, 1)) as src:
        rgb, valid = read_tile(src, Window(0, 0, 8, 8), 8)
        assert valid.all() and np.array_equal(rgb[..., 0], rgb[..., 2])
    with pytest.raises(RasterError, match=r"bands=\(1, 2, 3\) out of range; the raster has 1 band"):
        open_raster(one, bands=(1, 2, 3))
    with pytest.raises(RasterError, match="out of range"):
        open_raster(one, bands=(0, 1, 1))
    with pytest.raises(RasterError, match="three 1-based band numbers"):
        open_raster(one, bands=(1, 1))
    four = write_tif(tmp_path / "four.tif", ramp(4, 8, 8, "uint16"))  # 4th band is not alpha
    with pytest.raises(RasterError, match="4 bands"):
        open_raster(four)
    with open_raster(four, bands=(4, 3, 2)) as src:
        assert src.bands == (4, 3, 2)


def test_rgba_alpha_band_makes_pixels_invalid(tmp_path):
    data = ramp(4, 16, 16)
    data[3] = 255
    data[3, :, :5] = 0  # transparent left columns
    path = write_tif(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES")
    with open_raster(path) as src:
        assert src.bands == (1, 2, 3) and src.alpha == 4
        rgb, valid = read_tile(src, Window(0, 0, 16, 16), 16)
        assert not valid[:, :5].any() and valid[:, 5:].all()
        assert np.array_equal(rgb[:, 5:], data[:3, :, 5:].transpose(1, 2, 0))


def test_internal_mask_makes_pixels_invalid(tmp_path):
    path = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=3, dtype="uint8",
                           crs=UTM, transform=from_origin(500000, 4000000, 1, 1)) as dst:
            dst.write(ramp(3, 16, 16))
            mask = np.full((16, 16), 255, np.uint8)
            mask[:4] = 0
            dst.write_mask(mask)
    with open_raster(path) as src:
        _, valid = read_tile(src, Window(0, 0, 16, 16), 16)
        assert not valid[:4].any() and valid[4:].all()



def test_rasters_without_masks_skip_the_mask_read_with_the_same_tiles(tmp_path):
    """A uint8 raster GDAL calls all-valid is read without masks (a fast path); its tiles, at 1:1, when
    averaged down and at the padded edge, equal those of the same pixels under an all-255 mask."""
    from geo.grid import TileGrid

    data = ramp(3, 50, 70)
    plain = write_tif(tmp_path / "plain.tif", data)
    masked = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(masked, "w", driver="GTiff", width=70, height=50, count=3, dtype="uint8", crs=UTM,
                           transform=from_origin(500000, 4000000, 1, 1)) as dst:
            dst.write(data)
            dst.write_mask(np.full((50, 70), 255, np.uint8))
    with open_raster(plain) as a, open_raster(masked) as b:
        assert a.all_valid and not b.all_valid
        for gsd in (1.0, 3.0):
            tiles = list(TileGrid.from_source(a, 16, gsd))
            rgb_a, valid_a = read_tiles(a, tiles, 16)
            rgb_b, valid_b = read_tiles(b, tiles, 16)
            assert np.array_equal(valid_a, valid_b) and not valid_a.all()  # edge tiles are padded
            assert np.array_equal(rgb_a, rgb_b)
    assert apply(Scaling.identity(3), data) is data  # uint8 needs no stretch


# --- ground sample distance ------------------------------------------------------------------------

def test_gsd_geographic_is_metres_at_centre_latitude(tmp_path):
    step = 1e-5  # degrees
    path = write_tif(tmp_path / "wgs84.tif", ramp(3, 10, 10), crs="EPSG:4326",
                     transform=from_origin(10.0, 60.0 + 5 * step, step, step))  # centre at 60 N
    with open_raster(path) as src:
        gx, gy = gsd_metres(src)
    # WGS84 at 60 N: 1 deg of longitude = 55,800 m, 1 deg of latitude = 111,412 m
    assert gx == pytest.approx(55800.0 * step, rel=1e-4)
    assert gy == pytest.approx(111412.3 * step, rel=1e-4)


def test_gsd_projected_in_feet(tmp_path):
    path = write_tif(tmp_path / "feet.tif", ramp(3, 8, 8), crs="EPSG:2263",  # NY Long Island, US ft
                     transform=from_origin(1_000_000, 200_000, 2.0, 2.0))
    with open_raster(path) as src:
        assert src.gsd == pytest.approx((2 * 0.3048006096, 2 * 0.3048006096), rel=1e-9)


def test_gsd_web_mercator_is_ground_metres(tmp_path):
    path = write_tif(tmp_path / "merc.tif", ramp(3, 8, 8), crs="EPSG:3857",
                     transform=from_origin(0, 8_399_737.89, 1.0, 1.0))  # latitude 60 N
    with open_raster(path) as src:
        assert src.gsd == pytest.approx((0.5, 0.5), rel=1e-4)  # 1 m nominal * cos(60 deg)


# --- resampling and edges --------------------------------------------------------------------------

def test_edge_tile_is_padded_and_exact(tmp_path):
    data = ramp(3, 20, 30)
    path = write_tif(tmp_path / "small.tif", data)
    with open_raster(path) as src:
        rgb, valid = read_tile(src, Window(24, 16, 8, 8), 8)  # 6 x 4 source pixels inside
        assert valid[:4, :6].all() and not valid[4:].any() and not valid[:, 6:].any()
        assert np.array_equal(rgb[:4, :6], data[:, 16:, 24:].transpose(1, 2, 0))
        assert not rgb[~valid].any()
        rgb, valid = read_tile(src, Window(-4, -4, 8, 8), 8)  # top-left padding
        assert not valid[:4].any() and valid[4:, 4:].all()
        assert np.array_equal(rgb[4:, 4:], data[:, :4, :4].transpose(1, 2, 0))
        _, valid = read_tile(src, Window(100, 100, 8, 8), 8)  # wholly outside: nothing read
        assert not valid.any()


def test_downsampling_by_two_averages_2x2_blocks(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 32, 32)).astype(np.uint8)
    path = write_tif(tmp_path / "fine.tif", data)
    with open_raster(path) as src:
        rgb, valid = read_tile(src, Window(0, 0, 32, 32), 16)
    blocks = data.reshape(3, 16, 2, 16, 2).astype(float).mean(axis=(2, 4)).transpose(1, 2, 0)
    assert valid.all() and np.abs(rgb - blocks).max() <= 1.0


def test_upsampling_is_bilinear(tmp_path):
    data = ramp(3, 8, 8)
    path = write_tif(tmp_path / "coarse.tif", data)
    with open_raster(path) as src:
        rgb, valid = read_tile(src, Window(2, 2, 4, 4), 8)
    assert valid.all()
    # model pixel centres at source x = 2 + (j + 0.5) / 2: a linear ramp stays linear (row + col)
    centres = 2 + (np.arange(8) + 0.5) / 2 - 0.5
    expected = centres[:, None] + centres[None, :]
    assert np.abs(rgb[2:6, 2:6, 0] - expected[2:6, 2:6]).max() <= 1.0


# --- scaling ---------------------------------------------------------------------------------------

def test_apply_linear_stretch():
    s = Scaling(low=(100.0, 0.0, 0.0), high=(200.0, 1.0, 1.0))
    x = np.array([[50.0, 100.0, 150.0, 200.0, 250.0],
                  [0.0, 0.5, 1.0, np.nan, 2.0],
                  [-1.0, 0.25, 0.75, 1.0, np.inf]], np.float32).reshape(3, 1, 5)
    out = apply(s, x)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 128, 255, 255]
    assert out[1, 0].tolist() == [0, 128, 255, 0, 255]  # NaN -> 0
    assert out[2, 0].tolist() == [0, 64, 191, 255, 255]
    assert np.array_equal(apply(Scaling.identity(), np.array([[[3, 300]]] * 3)), np.array([[[3, 255]]] * 3))


def test_scaling_from_overview(tmp_path):
    data = np.broadcast_to(np.arange(600, dtype=np.uint16)[:, None] * 10, (3, 600, 600)).copy()
    path = write_tif(tmp_path / "ovr.tif", data, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4], Resampling.nearest)
    with open_raster(path) as src:
        s = estimate_scaling(src, src.bands)
    assert (s.method, s.source) == ("percentile", "overview")
    assert s.pixels == 300 * 300  # the 1/2 overview: the 1/4 one has fewer than 256 x 256 pixels
    assert s.low == pytest.approx((120.0,) * 3, abs=20) and s.high == pytest.approx((5880.0,) * 3, abs=20)
    assert Scaling.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_scaling_float32_sample_with_nan_nodata(tmp_path):
    data = np.broadcast_to(np.linspace(0.0, 1.0, 1500, dtype=np.float32)[None, :], (3, 40, 1500)).copy()
    data[:, :10] = np.nan
    path = write_tif(tmp_path / "float.tif", data, nodata=np.nan)
    with open_raster(path) as src:
        s = src.scaling
        assert (s.method, s.source) == ("percentile", "sample")
        assert s.pixels < 1024 * 40  # decimated to <= 1024 columns, NaN rows left out
        assert s.low == pytest.approx((0.02,) * 3, abs=0.01) and s.high == pytest.approx((0.98,) * 3, abs=0.01)
        rgb, valid = read_tile(src, Window(0, 0, 40, 40), 40)
        assert not valid[:10].any() and valid[10:].all() and rgb[10:, 0, 0].max() == 0
        rgb, _ = read_tile(src, Window(1460, 0, 40, 40), 40)
        assert (rgb[10:, -1] == 255).all()  # above the 98th percentile: clipped to white
        assert describe(src)["nodata"] == "nan"


def test_read_tiles_empty_batch():
    with open_raster(DATA / "RGB.byte.tif") as src:
        rgb, valid = read_tiles(src, [], 16)
    assert rgb.shape == (0, 16, 16, 3) and valid.shape == (0, 16, 16)


def test_complex_pixels_are_refused_not_cut_to_their_real_part(tmp_path):
    data = (ramp(3, 20, 20, "float32") + 1j * ramp(3, 20, 20, "float32")).astype("complex64")
    path = write_tif(tmp_path / "radar.tif", data)
    with pytest.raises(RasterError, match=r"radar\.tif: complex pixels \(complex64\) are not RGB imagery"):
        open_raster(path)


def test_a_raster_at_the_pole_in_degrees_names_the_problem(tmp_path):
    path = write_tif(tmp_path / "pole.tif", ramp(3, 50, 50), crs="EPSG:4326",
                     transform=from_origin(10.0, 90.0, 1e-5, 1e-5))
    with pytest.raises(RasterError) as error:
        open_raster(path)
    message = str(error.value)
    assert message.startswith(f"{path}: a pixel is ") and "near a pole" in message and "EPSG:3413" in message
    assert "no valid pixels" not in message
    polar = write_tif(tmp_path / "polar.tif", ramp(3, 50, 50), crs="EPSG:3413",
                      transform=from_origin(-25.0, 25.0, 1.0, 1.0))  # the same place, projected: fine
    with open_raster(polar) as src:
        assert src.gsd[0] == pytest.approx(src.gsd[1], rel=0.05)
