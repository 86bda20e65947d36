"""python -m geo.map on the shared GeoTIFFs with real (random-initialised) bundles and the torch backend.

Bundles: "full" is a standard resnet18 image encoder (16-d embeddings) with a soundscape head and a
DeepLabV3+ land-cover head, tile 64 px, made at 600 m (2x RGB.byte's 300 m pixels) and copied at
2.76 m (2x RGBA.uint16's 1.38 m); "tiny3000" is a narrow ResNet with a soundscape head only at
3000 m (2 x 2 cells on RGB.byte), for the tests of warnings, batching, resuming and errors.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
from scipy.ndimage import binary_erosion

from geo.blend import NODATA, OverlapBlender, TileMosaic, blend_window
from geo.class_names import read_class_names
from geo.cog import is_cog
from geo.errors import RasterError
from geo.grid import Tile
from geo.map import MapOptions, main, map_files
from geo.uncertainty import normalised_entropy
from model.core.cli import run_cli
from tests.bundles import GEOTIFF, LAND, RGB, RGBA, ROOT, SOUNDS, map_bundle as make_bundle

CORRUPT, EMPTY = GEOTIFF / "corrupt.tif", GEOTIFF / "all-nodata.tif"
QUIET = MapOptions(progress=False)



def regrid_bundle(src: Path, dst: Path, gsd: float) -> Path:
    """A copy of a bundle that expects imagery at ``gsd`` metres per pixel."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "bundle.json").read_text())
    meta["image_input"]["gsd"] = gsd
    if "landcover" in meta["heads"]:
        meta["heads"]["landcover"]["gsd"] = gsd
    (dst / "bundle.json").write_text(json.dumps(meta, indent=2))
    return dst


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    full = make_bundle(root / "full600", gsd=600.0, landcover=True)
    tiny = make_bundle(root / "tiny3000", gsd=3000.0, landcover=False)
    return {"full600": full, "full2.76": regrid_bundle(full, root / "full2.76", 2.76), "tiny3000": tiny}


@pytest.fixture(scope="module")
def rgb_map(bundles, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rgb_map")
    [result] = map_files([RGB], bundles["full600"], out, "torch", QUIET)
    assert result.status == "mapped", result.message
    return out / "RGB.byte"


def _check_on_grid(product: rasterio.io.DatasetReader, src: rasterio.io.DatasetReader) -> tuple[int, int]:
    """Same CRS, same origin, pixel sizes integer multiples of the input's; returns the multiples."""
    assert product.crs == src.crs
    assert product.transform.b == 0 and product.transform.d == 0
    assert product.transform @ (0, 0) == pytest.approx(src.transform @ (0, 0), abs=1e-6)
    kx, ky = product.transform.a / src.transform.a, product.transform.e / src.transform.e
    assert kx == pytest.approx(round(kx), abs=1e-9) and ky == pytest.approx(round(ky), abs=1e-9)
    return round(kx), round(ky)


def test_rgb_products_lie_on_the_input_grid(rgb_map):
    with rasterio.open(RGB) as src:
        with rasterio.open(rgb_map / "landcover.tif") as lc:
            assert _check_on_grid(lc, src) == (2, 2)  # 64 model px per 128-px cell
            land = lc.read(1)
            assert lc.colormap(1)[1][:3] == tuple(LAND[1][1]) and lc.nodata == NODATA
            assert lc.descriptions == ("landcover_class",) and lc.overviews(1)
            input_valid = src.dataset_mask()[1::2, 1::2] > 0  # nearest of 2x2 source pixels per model pixel
        cells = {}
        for name in ("soundscape", "soundscape_scores", "embeddings"):
            with rasterio.open(rgb_map / f"{name}.tif") as ds:
                assert _check_on_grid(ds, src) == (128, 128)
                assert ds.shape == (6, 7)  # ceil(718 / 128), ceil(791 / 128)
                cells[name] = ds.read()
                descriptions = ds.descriptions
            if name == "soundscape_scores":
                assert descriptions == tuple(n for n, _ in SOUNDS) + ("uncertainty",)
            if name == "embeddings":
                assert descriptions == tuple(f"emb_{i:03d}" for i in range(16))
    assert land.shape == (359, 396)  # ceil(718 / 2), ceil(791 / 2): the input's extent, to whole 2-px pixels
    assert input_valid.shape == (359, 395)  # the last output column's centre lies on the input's edge
    assert np.all(land[:, :395][~input_valid] == NODATA)  # partial tiles masked per pixel
    assert np.all(land[:, :395][input_valid] < len(LAND)) and np.all(land[:, 395] == NODATA)
    classes, scores, emb = cells["soundscape"][0], cells["soundscape_scores"][:len(SOUNDS)], cells["embeddings"]
    has = classes != NODATA
    assert 0 < has.sum() < has.size  # RGB.byte has empty corner cells
    assert np.array_equal(classes[has], scores[:, has].argmax(axis=0))
    assert np.allclose(scores[:, has].sum(axis=0), 1, atol=1e-5)
    assert np.all(np.isnan(emb[:, ~has])) and np.all(np.isfinite(emb[:, has]))


def test_products_are_cloud_optimised_with_colour_tables(rgb_map):
    for name in ("landcover", "soundscape", "soundscape_scores", "embeddings"):
        assert is_cog(rgb_map / f"{name}.tif"), name
        with rasterio.open(rgb_map / f"{name}.tif") as ds:
            assert ds.profile["tiled"] and ds.compression is not None
    with rasterio.open(rgb_map / "soundscape.tif") as ds:
        assert ds.colormap(1)[0][:3] == tuple(SOUNDS[0][1]) and ds.nodata == NODATA
    assert sorted(p.name for p in rgb_map.iterdir()) == sorted(
        ["embeddings.tif", "landcover.gpkg", "landcover.tif", "run.json", "soundscape.tif",
         "soundscape_scores.tif", "tiles.gpkg"])  # no staging or temp files left


def test_class_rasters_name_their_classes_inside_the_cog(rgb_map):
    for name, classes in (("soundscape", SOUNDS), ("landcover", LAND)):
        path = rgb_map / f"{name}.tif"
        assert not Path(f"{path}.aux.xml").exists()  # the names are in the TIFF, not in a sidecar
        with rasterio.open(path) as ds:
            tags = ds.tags(1)
        assert json.loads(tags["class_names"]) == [n for n, _ in classes]
        assert [tags[f"class_{i}"] for i in range(len(classes))] == [n for n, _ in classes]
        assert read_class_names(path) == [n for n, _ in classes]


def test_uncertainty_band_is_the_normalised_entropy_of_the_scores(rgb_map):
    with rasterio.open(rgb_map / "soundscape_scores.tif") as ds:
        assert ds.count == len(SOUNDS) + 1 and ds.descriptions[-1] == "uncertainty"
        data = ds.read()
    scores, uncertainty = data[:len(SOUNDS)].astype(np.float64), data[-1]
    nodata = np.isnan(scores).any(axis=0)
    assert 0 < nodata.sum() < nodata.size and np.array_equal(np.isnan(uncertainty), nodata)
    p = scores[:, ~nodata]
    expected = -(p * np.log(p)).sum(axis=0) / np.log(len(SOUNDS))  # random heads: no score is exactly 0
    np.testing.assert_allclose(uncertainty[~nodata], expected, atol=1e-5)
    assert np.all((uncertainty[~nodata] >= 0) & (uncertainty[~nodata] <= 1))


def test_normalised_entropy_spans_certain_to_uniform():
    h = normalised_entropy(np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [np.nan, np.nan, np.nan]]))
    assert h.dtype == np.float32 and h[0] == 0.0 and h[1] == pytest.approx(1.0) and np.isnan(h[2])
    assert np.array_equal(normalised_entropy(np.ones((2, 1))), np.zeros(2, np.float32))  # one class: certain


def test_tiles_gpkg_has_one_cell_polygon_per_mapped_tile(rgb_map):
    tiles = gpd.read_file(rgb_map / "tiles.gpkg")
    with rasterio.open(RGB) as src, rasterio.open(rgb_map / "soundscape.tif") as ds:
        assert tiles.crs == src.crs
        classes, cell = ds.read(1), ds.transform
    expected = {"row", "col", "valid_frac", "sound_1", "score_1", "sound_2", "score_2", "sound_3", "score_3"}
    assert expected <= set(tiles.columns)
    assert len(tiles) == int((classes != NODATA).sum())
    names = [n for n, _ in SOUNDS]
    for t in tiles.itertuples():
        assert names[classes[t.row, t.col]] == t.sound_1 and t.score_1 >= t.score_2 >= t.score_3
        x0, y0 = cell @ (t.col, t.row)
        x1, y1 = cell @ (t.col + 1, t.row + 1)
        assert t.geometry.bounds == pytest.approx((x0, y1, x1, y0))
        assert 0 < t.valid_frac <= 1


def test_landcover_gpkg_polygons_cover_the_class_raster(rgb_map):
    polygons = gpd.read_file(rgb_map / "landcover.gpkg")
    with rasterio.open(rgb_map / "landcover.tif") as ds:
        land, pixel_area = ds.read(1), abs(ds.transform.determinant)
        assert polygons.crs == ds.crs
    assert set(polygons.columns) >= {"class_id", "class_name", "color", "pixels", "area_m2", "geometry"}
    assert set(polygons.class_name) <= {n for n, _ in LAND}
    for class_id, group in polygons.groupby("class_id"):
        counted = int((land == class_id).sum())
        assert group.pixels.sum() <= counted  # small polygons dropped, never invented
        assert group.area_m2.sum() == pytest.approx(group.pixels.sum() * 600.08 ** 2, rel=1e-3)
        assert group.geometry.area.sum() == pytest.approx(group.pixels.sum() * pixel_area, rel=0.05)


def test_run_json_records_the_run(rgb_map, bundles):
    from model.bundle import content_hash

    info = json.loads((rgb_map / "run.json").read_text())
    assert info["bundle"]["content_hash"] == content_hash(bundles["full600"])
    assert info["backend"]["name"].startswith("torch")
    assert {"geoaudio", "torch", "onnxruntime", "rasterio", "GDAL"} <= set(info["versions"])
    assert info["input"]["path"] == str(RGB) and info["input"]["width"] == 791
    assert info["grid"]["cell_shape"] == [6, 7] and info["grid"]["tile_size"] == 64
    assert info["scaling"]["method"] == "identity"
    t = info["timings"]
    assert t["tiles"] == 42 and 0 < t["tiles_with_data"] < 42 and t["tiles_per_s"] > 0
    assert all(t[k] >= 0 for k in ("read_s", "infer_s", "write_s", "total_s"))
    assert info["warnings"] == [] and len(info["products"]) == 6


def test_uint16_rgba_is_scaled_masked_and_on_grid(bundles, tmp_path):
    [result] = map_files([RGBA], bundles["full2.76"], tmp_path, "torch", QUIET)
    assert result.status == "mapped", result.message
    out = tmp_path / "RGBA.uint16"
    info = json.loads((out / "run.json").read_text())
    assert info["scaling"]["method"] == "percentile" and info["input"]["dtype"] == "uint16"
    with rasterio.open(RGBA) as src:
        for name, multiple in (("landcover", 2), ("soundscape", 128), ("embeddings", 128)):
            with rasterio.open(out / f"{name}.tif") as ds:
                assert _check_on_grid(ds, src) == (multiple, multiple)
        alpha = src.read(4)[1::2, 1::2] > 0
    with rasterio.open(out / "landcover.tif") as ds:
        land = ds.read(1)[: alpha.shape[0], : alpha.shape[1]]
    assert np.all(land[~alpha] == NODATA) and np.all(land[alpha] != NODATA)  # alpha masks per pixel


def test_landcover_lies_on_the_input_grid_when_the_resolutions_do_not_divide(bundles, tmp_path):
    """1.38 m imagery and a 1.0 m model: a model pixel is 0.72 input pixels, so land cover comes
    on the input's own grid and extent (not on a 1.0 m grid that matches no input pixel edge)."""
    bundle = regrid_bundle(bundles["full600"], tmp_path / "full1.0", 1.0)
    [result] = map_files([RGBA], bundle, tmp_path / "out", "torch", QUIET)
    assert result.status == "mapped", result.message
    with rasterio.open(RGBA) as src, rasterio.open(tmp_path / "out" / "RGBA.uint16" / "landcover.tif") as lc:
        assert _check_on_grid(lc, src) == (1, 1)
        assert lc.shape == src.shape and lc.bounds == src.bounds
        land, alpha = lc.read(1), src.read(4) > 0
    inside, outside = binary_erosion(alpha, iterations=2), binary_erosion(~alpha, iterations=2)
    assert np.all(land[inside] < len(LAND)) and np.all(land[outside] == NODATA)  # up to the mask's edge
    with rasterio.open(tmp_path / "out" / "RGBA.uint16" / "soundscape.tif") as cells:
        kx, ky = _check_on_grid(cells, src)  # cells: whole multiples of input pixels
    assert kx == ky == round(64 / 1.38)


def test_far_resolution_is_mapped_with_a_warning(bundles, tmp_path):
    [result] = map_files([RGB], bundles["tiny3000"], tmp_path, "torch", QUIET)
    assert result.status == "mapped"
    info = json.loads((tmp_path / "RGB.byte" / "run.json").read_text())
    assert any("10.0x finer" in w for w in info["warnings"]) and result.warnings == info["warnings"]
    assert info["grid"]["cell_shape"] == [2, 2]


def _centre(src: Path, dst: Path, size: int) -> Path:
    """The central ``size`` x ``size`` pixels of ``src`` as a GeoTIFF on the same grid (all valid on RGB.byte)."""
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(src) as ds:
        window = Window((ds.width - size) // 2, (ds.height - size) // 2, size, size)
        corner = ds.transform @ Affine.translation(window.col_off, window.row_off)
        profile = {**ds.profile, "width": size, "height": size, "transform": corner,
                   "tiled": False, "blockxsize": None, "blockysize": None}
        with rasterio.open(dst, "w", **{k: v for k, v in profile.items() if v is not None}) as out:
            out.write(ds.read(window=window))
    return dst


def test_imagery_over_eight_times_coarser_is_refused_in_one_line(bundles, tmp_path):
    """RGB.byte's 300 m pixels with a bundle at 300/8.1 m: every tile would be upsampled 8.1x."""
    bundle = regrid_bundle(bundles["tiny3000"], tmp_path / "b8.1", 300 / 8.1)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "geo.map", str(RGB), "--bundle", str(bundle), "--out", str(out),
                           "--backend", "torch", "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith(("error:", "warning:", "Traceback"))] == [
        (f"error: {RGB}: its pixels are 300 m, 8.1x coarser than the bundle's 37.037 m; mapping it would upsample "
         f"every tile (more than 8x is refused; python -m geo.map --allow-resample maps it anyway)")]
    assert "0 mapped, 0 skipped (up to date), 1 failed" in proc.stdout
    assert not out.exists() or not any(out.iterdir())


def test_allow_resample_maps_it_and_under_eight_times_is_mapped_with_a_warning(bundles, tmp_path, capsys):
    scene = _centre(RGB, tmp_path / "centre.tif", 64)  # 8 x 8 cells of 8 px at either resolution
    over = regrid_bundle(bundles["tiny3000"], tmp_path / "b8.1", 300 / 8.1)
    code = run_cli(lambda: main([str(scene), "--bundle", str(over), "--out", str(tmp_path / "a"), "--backend", "torch",
                                 "--no-progress", "--allow-resample"]))
    assert code == 0, capsys.readouterr().err
    info = json.loads((tmp_path / "a" / "centre" / "run.json").read_text())
    assert any("8.1x coarser" in w for w in info["warnings"]) and info["grid"]["cell_shape"] == [8, 8]
    under = regrid_bundle(bundles["tiny3000"], tmp_path / "b7.9", 300 / 7.9)
    [result] = map_files([scene], under, tmp_path / "b", "torch", QUIET)
    assert result.status == "mapped", result.message
    assert result.warnings == ["input is 7.9x coarser than the model's 37.9747 m; mapping anyway"]


def test_tiles_gpkg_lists_the_nearest_gallery_recordings(bundles, tmp_path):
    import pandas as pd

    from model.bundle import load
    from model.bundle.gallery import audio_encoder_hash, gallery_path, write_gallery

    bundle = load(shutil.copytree(bundles["tiny3000"], tmp_path / "bundle"))
    gallery = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    rows = pd.DataFrame({"key": np.arange(100, 105), "longitude": 0.0, "latitude": 0.0,
                         "title": [f"recording {i}" for i in range(5)], "description": "", "audio_path": ""})
    write_gallery(gallery_path(bundle), rows, gallery,
                  {"bundle_hash": bundle.content_hash(), "audio_encoder_hash": audio_encoder_hash(bundle),
                   "audio_source": "test", "data": "", "embedding_dim": "16", "distance": "euclidean"})
    [result] = map_files([RGB], bundle.path, tmp_path / "out", "torch", QUIET)
    assert result.status == "mapped", result.message
    tiles = gpd.read_file(tmp_path / "out" / "RGB.byte" / "tiles.gpkg")
    with rasterio.open(tmp_path / "out" / "RGB.byte" / "embeddings.tif") as ds:
        emb = ds.read()
    assert {"near_1_key", "near_1_title", "near_1_distance", "near_3_key"} <= set(tiles.columns)
    for t in tiles.itertuples():
        d = np.linalg.norm(gallery - emb[:, t.row, t.col], axis=1)
        assert t.near_1_key == 100 + d.argmin() and t.near_1_title == f"recording {d.argmin()}"
        assert t.near_1_distance == pytest.approx(d.min(), rel=1e-4)
        assert t.near_2_key == 100 + np.argsort(d)[1]


def test_bad_files_fail_alone_with_one_line_each(bundles, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "geo.map", str(CORRUPT), str(RGB), str(EMPTY), "--bundle",
                           str(bundles["tiny3000"]), "--out", str(out), "--backend", "torch", "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "corrupt.tif" in errors[0] and "all-nodata.tif" in errors[1]
    assert "Traceback" not in proc.stderr
    # nothing left for the bad files; the catalogue and mosaics written after the run list the one mapped
    assert sorted(p.name for p in out.iterdir()) == ["RGB.byte", "catalog.json", "mosaic", "stac"]
    assert (out / "RGB.byte" / "run.json").is_file()
    assert [i.id for i in pystac.Catalog.from_file(out / "catalog.json").get_items()] == ["RGB.byte"]
    assert (out / "mosaic" / "soundscape.vrt").is_file() and f"catalogue: {out / 'catalog.json'} (1 input)" in proc.stdout
    assert "1 mapped, 0 skipped (up to date), 2 failed" in proc.stdout and "corrupt.tif" in proc.stdout


def test_a_folder_input_maps_the_rasters_inside_it(bundles, tmp_path):
    folder = tmp_path / "imagery"
    folder.mkdir()
    shutil.copy(RGB, folder / "b_scene.TIF")
    shutil.copy(CORRUPT, folder / "a_broken.tif")
    (folder / "notes.txt").write_text("not imagery")
    (tmp_path / "empty").mkdir()
    results = map_files([folder, tmp_path / "empty"], bundles["tiny3000"], tmp_path / "out", "torch", QUIET)
    assert [(r.path.name, r.status) for r in results] == [("a_broken.tif", "failed"), ("b_scene.TIF", "mapped"),
                                                          ("empty", "failed")]
    assert "is a directory" in results[2].message


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_rerun_skips_resumes_and_overwrites(bundles, tmp_path):
    bundle = bundles["tiny3000"]
    [first] = map_files([RGB], bundle, tmp_path, "torch", QUIET)
    folder = tmp_path / "RGB.byte"
    before = _mtimes(folder)
    [again] = map_files([RGB], bundle, tmp_path, "torch", QUIET)
    assert (first.status, again.status) == ("mapped", "skipped") and _mtimes(folder) == before
    # a killed run: run.json never written, staging files left in .partial
    (folder / "run.json").unlink()
    (folder / ".partial").mkdir()
    (folder / ".partial" / "embeddings.staging.tif").write_bytes(b"half")
    [resumed] = map_files([RGB], bundle, tmp_path, "torch", QUIET)
    assert resumed.status == "mapped" and not (folder / ".partial").exists()
    assert (folder / "run.json").is_file()
    # changed options are not "up to date"
    [other] = map_files([RGB], bundle, tmp_path, "torch", MapOptions(progress=False, min_area_m2=1e9))
    assert other.status == "mapped"
    before = _mtimes(folder)
    [redone] = map_files([RGB], bundle, tmp_path, "torch", MapOptions(progress=False, min_area_m2=1e9, overwrite=True))
    assert redone.status == "mapped"
    after = _mtimes(folder)
    assert all(after[name] > before[name] for name in before)


def test_progress_json_lines_count_every_tile(bundles, tmp_path, capsys):
    from geo.progress import parse_line

    code = run_cli(lambda: main([str(RGB), "--bundle", str(bundles["tiny3000"]), "--out", str(tmp_path),
                                 "--backend", "torch", "--batch", "2", "--no-progress", "--progress-json"]))
    err = capsys.readouterr().err
    updates = [parse_line(line) for line in err.splitlines() if not line.startswith("warning: ")]
    assert code == 0 and updates and None not in updates  # progress lines and warnings, no bars
    done = [u[1] for u in updates]
    assert {u[0] for u in updates} == {str(RGB)} and {u[2] for u in updates} == {4}  # 2 x 2 cells
    assert done == sorted(done) and done[0] == 0 and done[-1] == 4


def test_stride_larger_than_tile_is_a_one_line_error(bundles, tmp_path, capsys):
    code = run_cli(lambda: main([str(RGB), "--bundle", str(bundles["tiny3000"]), "--out", str(tmp_path),
                                 "--backend", "torch", "--stride", "65", "--no-progress"]))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --stride 65") and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


HUGE_VRT = """<VRTDataset rasterXSize="1000000" rasterYSize="1000000">
  <SRS>EPSG:32618</SRS>
  <GeoTransform>400000, 1.0, 0, 5000000, 0, -1.0</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1"><ColorInterp>Red</ColorInterp></VRTRasterBand>
  <VRTRasterBand dataType="Byte" band="2"><ColorInterp>Green</ColorInterp></VRTRasterBand>
  <VRTRasterBand dataType="Byte" band="3"><ColorInterp>Blue</ColorInterp></VRTRasterBand>
</VRTDataset>
"""


def test_a_header_claiming_a_huge_raster_is_refused_before_reading(bundles, tmp_path, capsys):
    """A 600-byte VRT claiming 10^6 x 10^6 px at 1 m: 976,562,500 tiles of 32 m for a 0.5 m bundle."""
    huge = tmp_path / "huge.vrt"
    huge.write_text(HUGE_VRT)
    bundle = regrid_bundle(bundles["tiny3000"], tmp_path / "tiny0.5", 0.5)
    out = tmp_path / "out"
    code = run_cli(lambda: main([str(huge), "--bundle", str(bundle), "--out", str(out), "--backend", "torch",
                                 "--no-progress"]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"error: {huge}: 1,000,000 x 1,000,000 px is 976,562,500 tiles (31,250 x 31,250) "
                                 f"of 64 px at 0.5 m, more than the limit of 1,000,000 "
                                 f"(--max-tiles N raises it, --force-large removes it)")
    assert not out.exists() or not any(out.iterdir())


def test_the_tile_limit_is_an_option_and_force_large_lifts_it(bundles, tmp_path, capsys):
    [refused] = map_files([RGB], bundles["tiny3000"], tmp_path / "a", "torch", MapOptions(progress=False, max_tiles=3))
    assert refused.status == "failed" and "is 4 tiles (2 x 2)" in refused.message
    assert "more than the limit of 3 " in refused.message and not (tmp_path / "a" / "RGB.byte").exists()
    code = run_cli(lambda: main([str(RGB), "--bundle", str(bundles["tiny3000"]), "--out", str(tmp_path / "b"),
                                 "--backend", "torch", "--no-progress", "--max-tiles", "3", "--force-large"]))
    assert code == 0 and (tmp_path / "b" / "RGB.byte" / "run.json").is_file(), capsys.readouterr().err


def test_pipeline_delivers_tiles_in_order_and_stops_on_errors(bundles):
    import threading

    from export.runtime import open_backend
    from geo.grid import TileGrid
    from geo.pipeline import run_pipeline
    from geo.raster import open_raster

    backend = open_backend(bundles["tiny3000"], name="torch")
    with open_raster(RGB) as src:
        grid, scaling = TileGrid.from_source(src, 64, 1500.0), src.scaling  # 3 x 3 cells of 320 px
    seen: list[int] = []
    timings = run_pipeline(lambda: open_raster(RGB), grid, scaling, backend,
                           lambda b: seen.extend(t.index for t in b.tiles), batch_size=1, workers=3)
    assert seen == list(range(9)) and timings.tiles == 9 and timings.infer_s > 0
    threads_before = threading.active_count()

    def failing_sink(batch):
        if batch.tiles[0].index == 5:
            raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        run_pipeline(lambda: open_raster(RGB), grid, scaling, backend, failing_sink, batch_size=1, workers=3)
    with pytest.raises(RasterError, match="no such file"):
        run_pipeline(lambda: open_raster(GEOTIFF / "missing.tif"), grid, scaling, backend, seen.append)
    assert threading.active_count() == threads_before  # every reader and writer thread ended


def _feed(mosaic, rows: int, cols: int, probs_of, valid_of) -> np.ndarray:
    """Run every tile of a rows x cols cell grid through a mosaicker; assemble the strips."""
    strips = []
    for r in range(rows):
        for c in range(cols):
            strips += mosaic.add(Tile(r * cols + c, r, c, None), probs_of(r, c), valid_of(r, c))
    strips += mosaic.finish()
    starts = [s for s, _ in strips]
    assert starts == sorted(starts)
    out = np.concatenate([a for _, a in strips])
    assert starts[0] == 0 and out.shape[0] == mosaic.rows  # contiguous, every row once
    return out


def test_tile_mosaic_places_classes_and_masks():
    t, k = 4, 3
    probs = lambda r, c: np.eye(k, dtype=np.float32)[(r + c) % k][:, None, None] * np.ones((k, t, t), np.float32)
    valid = lambda r, c: np.ones((t, t), bool) if (r, c) != (1, 1) else np.zeros((t, t), bool)
    out = _feed(TileMosaic(2 * t, 3 * t, t), 2, 3, probs, valid)
    assert out[0, 0] == 0 and out[0, t] == 1 and out[t, 0] == 1
    assert np.all(out[t:, t:2 * t] == NODATA)


def test_overlap_blender_averages_with_a_smooth_window():
    t, s, k = 8, 4, 2
    w = blend_window(t, s)
    assert w[0, 0] < 0.01 and w[t // 2, t // 2] > 0.9  # damped borders
    # half-overlapping sin² windows sum to ~1 along a row of tiles (partition of unity)
    one_d = w[t // 2] / np.sqrt(w[t // 2, t // 2])
    total = np.zeros(3 * t)
    for c in range(5):
        total[c * s: c * s + t] += one_d
    assert np.allclose(total[t:2 * t], 1.0, atol=0.01)
    # left half of the map votes class 0, right half class 1: the boundary sits between the cells
    probs = lambda r, c: np.stack([np.full((t, t), c < 2, np.float32), np.full((t, t), c >= 2, np.float32)])
    valid = lambda r, c: np.ones((t, t), bool)
    out = _feed(OverlapBlender(3 * s, 4 * s, t, s, k), 3, 4, probs, valid)
    assert out.shape == (3 * s, 4 * s)
    assert np.all(out[:, : 2 * s] == 0) and np.all(out[:, 2 * s:] == 1)
    none = _feed(OverlapBlender(2 * s, 2 * s, t, s, k), 2, 2, lambda r, c: None, valid)
    assert np.all(none == NODATA)


def test_one_file_loads_and_hashes_the_bundle_once(bundles, tmp_path, bundle_reads):
    from model.bundle import load

    [result] = map_files([RGB], bundles["tiny3000"], tmp_path / "path", "auto", QUIET)
    assert result.status == "mapped", result.message
    assert bundle_reads == {"load": 1, "hash": 1}  # auto tries trt, onnx-int8, onnx, then torch
    recorded = json.loads((result.out_dir / "run.json").read_text())["bundle"]["content_hash"]
    bundle = load(bundles["tiny3000"])
    [again] = map_files([RGB], bundle, tmp_path / "loaded", "auto", QUIET)  # a loaded Bundle is not loaded again
    assert again.status == "mapped" and bundle_reads == {"load": 2, "hash": 2}
    assert bundle.content_hash() == recorded and bundle_reads["hash"] == 2  # kept on the Bundle
