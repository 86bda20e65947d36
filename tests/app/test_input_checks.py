"""What the app checks of its inputs before using them, on real files: a GeoTIFF with no valid pixel
(nodata value, alpha band, NaN) is refused with one line; the imagery preview is averaged only from
a bounded number of pixels; an upload that is not audio is "not a readable audio file" whatever the
decoder said; the preview caption of a scene that is not mapped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from app.layers import Footprint, imagery_resampling, preview_caption
from app.scenes import UploadError, check_raster
from geo.raster import has_valid_pixels, open_raster

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def _write(path: Path, data: np.ndarray, **profile) -> Path:
    """A georeferenced GeoTIFF (UTM 18N, 0.5 m pixels) of band-first ``data``."""
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype,
                       crs="EPSG:32618", transform=from_origin(500_000, 4_000_000, 0.5, 0.5), **profile) as ds:
        ds.write(data)
    return path


def _valid(path: Path) -> bool:
    with open_raster(path) as src:
        return has_valid_pixels(src)


def test_a_raster_with_no_valid_pixel_is_found_and_refused(tmp_path):
    zeros = np.zeros((3, 120, 200), np.uint8)
    nodata = _write(tmp_path / "nodata.tif", zeros, nodata=0)
    assert not _valid(nodata)
    with pytest.raises(UploadError, match=r"^.*nodata\.tif: every pixel is nodata, nothing to map$"):
        check_raster(nodata)
    one = zeros.copy()
    one[:, 119, 199] = 7  # a single valid pixel, in the last corner
    assert _valid(_write(tmp_path / "one.tif", one, nodata=0))
    rgba = np.concatenate([np.full((3, 120, 200), 90, np.uint8), np.zeros((1, 120, 200), np.uint8)])
    assert not _valid(_write(tmp_path / "clear.tif", rgba, photometric="RGB", alpha="YES"))
    nan = np.full((3, 120, 200), np.nan, np.float32)
    assert not _valid(_write(tmp_path / "nan.tif", nan))
    nan[:, 5, 5] = 1.0
    assert _valid(_write(tmp_path / "nan_one.tif", nan))
    assert check_raster(tmp_path / "one.tif")["width"] == 200


def test_a_large_raster_is_probed_on_a_decimated_read(tmp_path):
    data = np.zeros((3, 400, 400), np.uint8)
    data[:, 100:140, 200:240] = 50  # a 40 px patch, wider than the 4 px decimation step
    path = _write(tmp_path / "patch.tif", data, nodata=0)
    with open_raster(path) as src:
        assert has_valid_pixels(src, max_pixels=100 * 100)
        assert not has_valid_pixels(src, max_pixels=1)  # one pixel read (the centre one): nodata there


def test_the_preview_is_averaged_only_from_a_bounded_read(tmp_path):
    path = _write(tmp_path / "scene.tif", np.full((3, 512, 512), 80, np.uint8))
    with rasterio.open(path) as ds:
        assert imagery_resampling(ds, 1, (3, 128, 128)) == Resampling.average
        assert imagery_resampling(ds, 1, (3, 128, 128), max_pixels=100_000) == Resampling.nearest  # 262,144 px
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.average)
    with rasterio.open(path) as ds:  # GDAL reads the 1/4 overview: 16,384 px
        assert imagery_resampling(ds, 1, (3, 128, 128), max_pixels=100_000) == Resampling.average


def test_the_preview_caption_says_footprint_crs_and_resolution():
    fp = Footprint(((-70.5, -33.5), (-70.5, -33.4), (-70.4, -33.4), (-70.4, -33.5)), 9_300.0, 11_100.0)
    facts = {"epsg": None, "crs_wkt": None, "gsd_m": [30.0, 20.0], "width": 310, "height": 555}
    assert preview_caption("upload x.tif", fp, facts) == (
        "Imagery of upload x.tif (preview, not mapped): footprint 9.3 km x 11.1 km around 33.4500° S, "
        "70.4500° W; CRS none; 30 x 20 m per pixel (310 x 555 pixels).")


@pytest.fixture
def torch_backend(quick_demo, tmp_path, monkeypatch):
    from export.runtime import open_backend

    monkeypatch.setenv("GEOAUDIO_CACHE", str(tmp_path / "cache"))
    return open_backend(quick_demo.bundle, "torch")


def test_an_upload_that_is_not_audio_is_named_as_such(torch_backend, tmp_path):
    from app.sound_query import AudioUploadError, embed_upload

    rng = np.random.default_rng(0)
    not_audio = {"notes.wav": b"this is not audio", "noise.mp3": rng.integers(0, 256, 20_000, np.uint8).tobytes(),
                 "picture.flac": (ROOT / "docs" / "img" / "app.png").read_bytes()}
    landsat = SHARED / "geotiff" / "RGB.byte.tif"
    if landsat.is_file():
        not_audio["map.ogg"] = landsat.read_bytes()[:30_000]
    for name, data in not_audio.items():
        with pytest.raises(AudioUploadError) as caught:
            embed_upload(torch_backend, name, data)
        assert str(caught.value) == f"{name}: not a readable audio file (wav, flac, ogg, mp3)"
    assert not list((tmp_path / "cache" / "queries").iterdir())  # no temporary file left
