"""The STAC catalogue and VRT mosaics of a geo.map output folder (geo/catalog.py, geo/mosaic.py).

Three scenes cut from RGB.byte (UTM 18N, 300 m pixels) are mapped once with a random-initialised
bundle (tile 64 px at 600 m: 2 x 2 cells of 128 input pixels per scene, land cover at 600 m):
"west" and "east" side by side in EPSG:32618 (west carries a TIFF date), and "south", cut below
them with a gap and reprojected to UTM 17N (EPSG:32617), so the folder holds two CRSs.
"""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.warp import transform as transform_points
from rasterio.windows import Window
from shapely.geometry import Point, shape

from geo.catalog import UNKNOWN_START, main, publish_catalogue, validate_offline
from geo.map import MapOptions, map_files
from model.core.cli import run_cli
from tests.bundles import LAND, RGB, SOUNDS, map_bundle

SCENES = {"west": (140, 100), "east": (396, 100), "south": (268, 440)}  # (col, row) of a 256 px cut of RGB.byte
SIZE = 256
TIFF_DATE = "2021:06:15 10:30:00"  # west's TIFFTAG_DATETIME
RASTERS = ("embeddings.tif", "landcover.tif", "soundscape.tif", "soundscape_scores.tif")


def _cut(dst: Path, col: int, row: int, tags: dict[str, str] | None = None) -> Path:
    """A ``SIZE`` x ``SIZE`` window of RGB.byte at (col, row), on RGB.byte's grid."""
    with rasterio.open(RGB) as ds:
        window = Window(col, row, SIZE, SIZE)
        profile = {**ds.profile, "width": SIZE, "height": SIZE, "transform": ds.window_transform(window),
                   "tiled": False}
        profile = {k: v for k, v in profile.items() if k not in ("blockxsize", "blockysize")}
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=window))
            if tags:
                out.update_tags(**tags)
    return dst


def _reprojected(src: Path, dst: Path, crs: str) -> Path:
    """``src`` warped to ``crs`` (nearest, about the same pixel size)."""
    with rasterio.open(src) as ds:
        transform, width, height = calculate_default_transform(ds.crs, crs, ds.width, ds.height, *ds.bounds)
        profile = {**ds.profile, "crs": crs, "transform": transform, "width": width, "height": height}
        with rasterio.open(dst, "w", **profile) as out:
            for band in range(1, ds.count + 1):
                reproject(rasterio.band(ds, band), rasterio.band(out, band), resampling=Resampling.nearest)
    return dst


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """The output folder of one geo.map run over the three scenes."""
    root = tmp_path_factory.mktemp("catalog")
    bundle = map_bundle(root / "bundle", gsd=600.0, landcover=True)
    scenes = root / "scenes"
    scenes.mkdir()
    west = _cut(scenes / "west.tif", *SCENES["west"], tags={"TIFFTAG_DATETIME": TIFF_DATE})
    east = _cut(scenes / "east.tif", *SCENES["east"])
    south = _reprojected(_cut(root / "south_utm18.tif", *SCENES["south"]), scenes / "south.tif", "EPSG:32617")
    results = map_files([west, east, south], bundle, root / "out", "torch", MapOptions(progress=False))
    assert [r.status for r in results] == ["mapped"] * 3, [r.message for r in results]
    return root / "out"


def _centre_lonlat(path: Path) -> tuple[float, float]:
    """The centre of a raster in WGS84 (lon, lat)."""
    with rasterio.open(path) as ds:
        x, y = ds.transform * (ds.width / 2, ds.height / 2)
        lon, lat = transform_points(ds.crs, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


def _run_info(out: Path, stem: str) -> dict:
    return json.loads((out / stem / "run.json").read_text())


def test_the_catalogue_has_one_valid_item_per_mapped_input(out):
    result = publish_catalogue(out)
    assert result["catalog"] == out / "catalog.json" and result["items"] == ["east", "south", "west"]
    assert result["problems"] == []
    catalog = pystac.Catalog.from_file(out / "catalog.json")
    assert validate_offline(catalog) == 5  # catalogue, mosaic collection, three items: core schemas, offline
    items = {item.id: item for item in catalog.get_items()}
    assert set(items) == {"east", "south", "west"}
    for stem, item in items.items():
        info = _run_info(out, stem)
        centre = Point(*_centre_lonlat(Path(info["input"]["path"])))
        assert shape(item.geometry).contains(centre)
        west, south, east, north = item.bbox
        assert west < centre.x < east and south < centre.y < north and -79 < west < east < -76
        assert item.properties["geoaudio:bundle_hash"] == info["bundle"]["content_hash"]
        assert item.properties["geoaudio:backend"] == info["backend"]["name"]
        assert item.common_metadata.created == datetime.fromisoformat(info["created"])
    assert items["west"].datetime == datetime(2021, 6, 15, 10, 30, tzinfo=timezone.utc)
    assert items["west"].properties["geoaudio:datetime_source"] == "TIFFTAG_DATETIME"
    east = items["east"]  # no date in the input: unknown, never the mapping time
    assert east.datetime is None and east.properties["geoaudio:datetime_source"] == "unknown"
    assert east.common_metadata.start_datetime == UNKNOWN_START
    mtime = _run_info(out, "east")["input"]["mtime_ns"] / 1e9
    assert east.common_metadata.end_datetime.timestamp() == pytest.approx(mtime, abs=1e-3)
    assert items["south"].properties["proj:code"] == "EPSG:32617"
    assert items["west"].properties["proj:code"] == "EPSG:32618"


def test_assets_have_media_types_roles_and_their_own_projection(out):
    publish_catalogue(out)
    for item in pystac.Catalog.from_file(out / "catalog.json").get_items():
        assert set(item.assets) == set(_run_info(out, item.id)["products"]) | {"run.json"}
        shapes = {}
        for key, asset in item.assets.items():
            assert not Path(asset.to_dict()["href"]).is_absolute()
            path = Path(asset.get_absolute_href())
            assert path == (out / item.id / key).resolve() and asset.title and asset.description
            if key.endswith(".tif"):
                assert asset.media_type == pystac.MediaType.COG and asset.roles == ["data"]
                with rasterio.open(path) as ds:
                    assert asset.extra_fields["proj:code"] == f"EPSG:{ds.crs.to_epsg()}"
                    assert asset.extra_fields["proj:shape"] == [ds.height, ds.width]
                    assert asset.extra_fields["proj:transform"] == pytest.approx(list(ds.transform)[:6])
                    assert asset.extra_fields["proj:bbox"] == pytest.approx(list(ds.bounds))
                    assert [b.get("name") for b in asset.extra_fields["bands"]] == list(ds.descriptions)
                shapes[key] = ds.shape
            elif key.endswith(".gpkg"):
                assert asset.media_type == "application/geopackage+sqlite3" and asset.roles == ["data"]
                assert asset.extra_fields["proj:code"] == item.properties["proj:code"]
            else:
                assert asset.media_type == "application/json" and asset.roles == ["metadata"]
        assert shapes["landcover.tif"] != shapes["soundscape.tif"]  # pixel grid vs cell grid, each its own
        for key, classes in (("soundscape.tif", SOUNDS), ("landcover.tif", LAND)):
            found = item.assets[key].extra_fields["classification:classes"]
            assert [(c["value"], c["title"], c["color_hint"]) for c in found[:-1]] == [
                (i, n, "".join(f"{v:02X}" for v in rgb)) for i, (n, rgb) in enumerate(classes)]
            assert found[-1] == {"value": 255, "name": "nodata", "title": "no data", "nodata": True}


def _read_at(mosaic: rasterio.io.DatasetReader, product: Path) -> np.ndarray:
    """The mosaic's pixels over the product's extent (the product must lie on the mosaic's grid)."""
    with rasterio.open(product) as ds:
        window = mosaic.window(*ds.bounds)
        assert window.col_off == pytest.approx(round(window.col_off), abs=1e-6)
        assert window.row_off == pytest.approx(round(window.row_off), abs=1e-6)
        assert (window.width, window.height) == pytest.approx((ds.width, ds.height), abs=1e-6)
        return mosaic.read(window=Window(round(window.col_off), round(window.row_off), ds.width, ds.height))


def _check_looks(mosaic: rasterio.io.DatasetReader, product: Path) -> None:
    """Nodata, band descriptions, colour table and class names as in the product."""
    with rasterio.open(product) as ds:
        assert mosaic.count == ds.count and mosaic.dtypes == ds.dtypes
        assert mosaic.descriptions == ds.descriptions
        assert (np.isnan(mosaic.nodata) and np.isnan(ds.nodata)) or mosaic.nodata == ds.nodata
        if product.name in ("soundscape.tif", "landcover.tif"):
            assert mosaic.colormap(1) == ds.colormap(1) and mosaic.tags(1) == ds.tags(1)


def _sources(vrt: Path) -> list[ET.Element]:
    root = ET.parse(vrt).getroot()
    return list(root.iter("SourceFilename")) + list(root.iter("SourceDataset"))


def test_one_mosaic_per_crs_gives_each_products_pixels_at_their_place(out):
    mosaics = publish_catalogue(out)["mosaics"]
    assert sorted(p.name for p in mosaics) == sorted(f"{Path(r).stem}_EPSG-{code}.vrt" for r in RASTERS
                                                     for code in (32617, 32618))
    for product in RASTERS:
        for code, stems in ((32618, ("west", "east")), (32617, ("south",))):
            vrt = out / "mosaic" / f"{Path(product).stem}_EPSG-{code}.vrt"
            assert all(s.get("relativeToVRT") == "1" and not Path(s.text).is_absolute() for s in _sources(vrt))
            with rasterio.open(vrt) as mosaic:
                assert mosaic.crs.to_epsg() == code
                for stem in stems:
                    with rasterio.open(out / stem / product) as ds:
                        assert mosaic.res == ds.res  # the same scene resolution: a pixel-for-pixel copy
                        expected = ds.read()
                    assert np.array_equal(_read_at(mosaic, out / stem / product), expected, equal_nan=True)
                    _check_looks(mosaic, out / stem / product)
    with rasterio.open(out / "mosaic" / "soundscape_EPSG-32618.vrt") as mosaic:
        assert mosaic.shape == (2, 4)  # west's 2 x 2 cells, then east's


def test_mosaics_warped_to_one_crs(out):
    mosaics = publish_catalogue(out, mosaic_crs="EPSG:32618")["mosaics"]
    assert sorted(p.name for p in mosaics) == sorted(f"{Path(r).stem}.vrt" for r in RASTERS)
    assert not list((out / "mosaic").glob("*_EPSG-*.vrt"))  # the per-CRS mosaics of an earlier call are gone
    for product in RASTERS:
        vrt = out / "mosaic" / f"{Path(product).stem}.vrt"
        with rasterio.open(vrt) as mosaic:
            assert mosaic.crs.to_epsg() == 32618
            for stem in ("west", "east"):
                with rasterio.open(out / stem / product) as ds:
                    assert np.array_equal(_read_at(mosaic, out / stem / product), ds.read(), equal_nan=True)
            _check_looks(mosaic, out / "south" / product)
            warped = out / "mosaic" / "warped" / "south" / f"{Path(product).stem}.vrt"
            with rasterio.open(warped) as part:
                assert part.crs.to_epsg() == 32618 and part.res == mosaic.res
                mine = _read_at(mosaic, warped)
                assert np.array_equal(mine, part.read(), equal_nan=True)
                expected = np.full(mine.shape, part.nodata, mine.dtype)
                classes = product in ("landcover.tif", "soundscape.tif")
                resampling = Resampling.nearest if classes else Resampling.bilinear
                with rasterio.open(out / "south" / product) as ds:
                    reproject(rasterio.band(ds, list(range(1, ds.count + 1))), expected, dst_transform=part.transform,
                              dst_crs=part.crs, dst_nodata=part.nodata, resampling=resampling)
            valid = ~np.isnan(expected) if expected.dtype.kind == "f" else expected != part.nodata
            assert valid.any() and np.allclose(mine[valid], expected[valid], atol=1e-5)
    assert all(s.get("relativeToVRT") == "1" for s in _sources(out / "mosaic" / "warped" / "south" / "landcover.vrt"))
    collection = pystac.Catalog.from_file(out / "catalog.json").get_child("mosaic")
    assert sorted(collection.assets) == sorted(p.name for p in mosaics)
    land = collection.assets["landcover.vrt"]
    assert land.extra_fields["proj:code"] == "EPSG:32618" and land.roles == ["data"]
    assert [c["title"] for c in land.extra_fields["classification:classes"][:-1]] == [n for n, _ in LAND]
    publish_catalogue(out)
    assert not (out / "mosaic" / "warped").exists()  # warped sources go with the warped mosaics


def test_the_output_folder_can_be_moved(out, tmp_path):
    publish_catalogue(out, mosaic_crs="EPSG:32618")  # with the warped VRTs of south
    moved = Path(shutil.copytree(out, tmp_path / "elsewhere" / "maps"))
    for path in [*moved.rglob("*.json"), *moved.rglob("*.vrt")]:
        assert str(out) not in path.read_text() or path.name == "run.json", path  # only run.json names the input
    catalog = pystac.Catalog.from_file(moved / "catalog.json")
    for item in catalog.get_items():
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).is_file() and str(moved) in asset.get_absolute_href()
    for asset in catalog.get_child("mosaic").assets.values():
        vrt = Path(asset.get_absolute_href())
        assert moved in vrt.parents
        with rasterio.open(vrt) as moved_mosaic, rasterio.open(out / "mosaic" / vrt.name) as mosaic:
            assert np.array_equal(moved_mosaic.read(), mosaic.read(), equal_nan=True)


def _copy_run(out: Path, stem: str, dst: Path, edit=None) -> None:
    """Copy a mapped folder, optionally editing its run.json with ``edit(info)``."""
    shutil.copytree(out / stem, dst)
    if edit is not None:
        info = json.loads((dst / "run.json").read_text())
        edit(info)
        (dst / "run.json").write_text(json.dumps(info))


def test_bad_run_json_and_unmosaickable_products_are_reported_and_skipped(out, tmp_path, capsys):
    other = tmp_path / "out"
    other.mkdir()
    _copy_run(out, "west", other / "a_west")
    _copy_run(out, "east", other / "b_east", lambda info: info["input"].update(mtime_ns=info["input"]["mtime_ns"] + 1))
    _copy_run(out, "east", other / "c_tagged",
              lambda info: info["input"].update(tags={"IMAGERY": {"ACQUISITIONDATETIME": "2020-01-02T03:04:05Z"}}))
    shutil.copytree(out / "east", other / "d_broken")
    (other / "d_broken" / "run.json").write_text('{"bundle": ')
    (other / "e_failed").mkdir()  # no run.json: not a finished run, passed over in silence
    _copy_run(out, "east", other / "f_nogrid", lambda info: info["input"].pop("transform"))
    with rasterio.open(other / "c_tagged" / "soundscape_scores.tif") as ds:
        profile = {**ds.profile, "count": 2}
    with rasterio.open(other / "c_tagged" / "soundscape_scores.tif", "w", **profile) as ds:
        ds.write(np.zeros((2, profile["height"], profile["width"]), np.float32))
    capsys.readouterr()
    result = publish_catalogue(other)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and len(result["problems"]) == 3, err
    assert err[0].startswith(f"warning: {other / 'd_broken' / 'run.json'}: unreadable run.json")
    assert "soundscape_scores.vrt: not written" in err[1] and "bands" in err[1]
    assert err[2] == (f"warning: {other / 'f_nogrid' / 'run.json'}: no footprint (no 'transform' in its input); "
                      f"the item of f_nogrid has no geometry")
    assert result["items"] == ["a_west", "b_east", "c_tagged", "f_nogrid"]
    assert sorted(p.name for p in result["mosaics"]) == ["embeddings.vrt", "landcover.vrt", "soundscape.vrt"]
    items = {i.id: i for i in pystac.Catalog.from_file(other / "catalog.json").get_items()}
    assert items["a_west"].datetime == datetime(2021, 6, 15, 10, 30, tzinfo=timezone.utc)
    assert items["b_east"].datetime is None  # its input changed since the run: its tags are not read
    assert items["c_tagged"].datetime == datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert items["c_tagged"].properties["geoaudio:datetime_source"] == "IMAGERY:ACQUISITIONDATETIME"
    assert items["f_nogrid"].geometry is None and items["f_nogrid"].bbox is None
    shutil.rmtree(other / "b_east")
    publish_catalogue(other)
    assert sorted(p.stem for p in (other / "stac" / "items").iterdir()) == ["a_west", "c_tagged", "f_nogrid"]


def test_command_line(out, tmp_path, capsys):
    assert run_cli(lambda: main([str(out)])) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"catalogue: {out / 'catalog.json'} (3 items)" and len(printed) == 9
    (tmp_path / "empty").mkdir()
    for argv, message in (([str(tmp_path / "empty")], "nothing mapped here"),
                          ([str(tmp_path / "nowhere")], "no such folder"),
                          ([str(out), "--mosaic-crs", "EPSG:99999999"], "not a CRS GDAL knows")):
        assert run_cli(lambda argv=argv: main(argv)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not any((tmp_path / "empty").iterdir())
