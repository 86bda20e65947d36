"""A mapped region (the STAC catalogue of a geo.map output folder) opened in the app as one scene.

Two adjacent 256 px cuts of RGB.byte (UTM 18N, 300 m pixels) are mapped once by geo.map with a
random-initialised bundle (64 px tiles at 600 m: 2 x 2 cells each, land cover too) into one folder,
and its catalogue and mosaics are published (geo.catalog). The app runs with --allow-server-paths
and its bundles folder holds that bundle ("region") and a tiny one of another hash ("other", first
by name, so selected at start); no demo is needed. Covered: the folder (or its catalog.json) shows
the mosaics' layers, legends, the inputs' footprints and tiles, without mapping anything; the sound
query is refused in one line with another bundle and runs over the whole region with the bundle it
was mapped with; a bad catalogue (not JSON, no items) is one line and the app keeps working; a folder
of mapped runs without catalog.json is offered a button that builds it; an empty folder is one line.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from streamlit.testing.v1 import AppTest

from app.catalog_scene import Region, query_refusal, read_region
from app.scenes import SERVER
from geo.catalog import publish_catalogue
from geo.map import MapOptions, map_files
from tests.app.page import deck_spec, healthy
from tests.bundles import LAND, RGB, SOUNDS, map_bundle, tiny_bundle

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app" / "main.py")
TIMEOUT = 180
SIZE = 256
SCENES = {"west": (140, 100), "east": (396, 100)}  # (col, row) of a 256 px cut of RGB.byte: side by side


def _cut(dst: Path, col: int, row: int) -> Path:
    """A ``SIZE`` x ``SIZE`` window of RGB.byte at (col, row), on RGB.byte's grid."""
    with rasterio.open(RGB) as ds:
        window = Window(col, row, SIZE, SIZE)
        profile = {k: v for k, v in ds.profile.items() if k not in ("blockxsize", "blockysize")}
        profile.update(width=SIZE, height=SIZE, transform=ds.window_transform(window), tiled=False)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=window))
    return dst


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> dict:
    """The mapped folder ("out", catalogue published), the scenes and the bundles folder."""
    root = tmp_path_factory.mktemp("region")
    bundle = map_bundle(root / "bundles" / "region", gsd=600.0, landcover=True)
    tiny_bundle(root / "bundles" / "other")
    (root / "scenes").mkdir()
    scenes = [_cut(root / "scenes" / f"{stem}.tif", *at) for stem, at in SCENES.items()]
    results = map_files(scenes, bundle, root / "out", "torch", MapOptions(progress=False))
    assert [r.status for r in results] == ["mapped", "mapped"], [r.message for r in results]
    assert publish_catalogue(root / "out")["problems"] == []
    hash_ = json.loads((root / "out" / "west" / "run.json").read_text())["bundle"]["content_hash"]
    return {"root": root, "out": root / "out", "hash": hash_, "scenes": dict(zip(SCENES, scenes))}


@pytest.fixture
def env(region, tmp_path, monkeypatch) -> dict:
    monkeypatch.setenv("GEOAUDIO_DEMO_DIR", str(tmp_path / "no-demo"))
    monkeypatch.setenv("GEOAUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GEOAUDIO_BUNDLES", str(region["root"] / "bundles"))
    monkeypatch.setenv("GEOAUDIO_ALLOW_SERVER_PATHS", "1")
    return {**region, "cache": tmp_path / "cache"}


def _open(path: Path) -> AppTest:
    """The app with ``path`` typed as the scene's server path."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.radio(key="scene_source").set_value(SERVER).run()
    at.text_input(key="scene_path").input(str(path)).run()
    healthy(at)
    return at


def _layers(at: AppTest) -> dict[str, dict]:
    return {layer["id"]: layer for layer in deck_spec(at)["layers"]}


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


def _infos(at: AppTest) -> list[str]:
    """The info lines but the one saying that the demo is not built (no demo here)."""
    return [text for text in _texts(at.info) if "demo is not built" not in text]


def _lonlat_bounds(path: Path) -> tuple[float, float, float, float]:
    with rasterio.open(path) as ds:
        return transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)


def test_a_mapped_folder_opens_as_one_scene_with_its_mosaics_and_nothing_is_mapped(env):
    at = _open(env["out"])
    assert _texts(at.error) == []
    assert list(_layers(at)) == ["soundscape", "footprints", "footprint_labels", "tiles"]  # no imagery layer
    at.checkbox(key="layer_landcover").check().run()
    at.checkbox(key="layer_uncertainty").check().run()
    healthy(at)
    layers = _layers(at)
    assert list(layers) == ["landcover", "soundscape", "uncertainty", "footprints", "footprint_labels", "tiles"]
    west, east = (_lonlat_bounds(env["scenes"][stem]) for stem in ("west", "east"))
    lons = [corner[0] for corner in layers["soundscape"]["bounds"]]  # one bitmap over both inputs
    assert min(lons) == pytest.approx(west[0], abs=0.02) and max(lons) == pytest.approx(east[2], abs=0.02)
    assert layers["landcover"]["image"].startswith("data:image/png")
    assert sorted(f["input"] for f in layers["footprints"]["data"]) == ["east", "west"]
    tiles = layers["tiles"]["data"]
    assert len(tiles) == 8 and {t["tile"].split()[0] for t in tiles} == {"east", "west"}  # 2 x 2 cells each
    assert all(t["landcover"] and t["sound_1"] for t in tiles)
    assert "{landcover}" in at.get("deck_gl_json_chart")[0].proto.tooltip
    legends = "\n".join(_texts(at.markdown))
    assert all(name in legends for name, _ in SOUNDS + LAND) and "Soundscape uncertainty" in legends
    captions = _texts(at.caption)
    assert any(c.startswith(f"The mapped region out: 2 inputs mapped with bundle {env['hash']}, shown as mapped: "
                            "nothing is mapped again") for c in captions)
    assert any(c.startswith("About this region: 2 mapped inputs (east, west); CRS EPSG:32618;") for c in captions)
    assert not at.button and not (env["cache"] / "maps").exists()  # no "Map this scene": nothing was mapped
    assert _layers(_open(env["out"] / "catalog.json")).keys() == {"soundscape", "footprints", "footprint_labels",
                                                                   "tiles"}


def test_the_sound_query_needs_the_bundle_the_region_was_mapped_with(env):
    at = _open(env["out"])
    other = at.radio(key="bundle_source").value
    assert other == "other"
    [refusal] = _texts(at.warning)
    assert refusal.startswith(f"Sound query not available: out was mapped with bundle {env['hash']} and the selected "
                              f"bundle is ") and refusal.endswith("select the bundle it was mapped with.")
    assert "heatmap" not in _layers(at)
    at.radio(key="bundle_source").set_value("region").run()
    at.radio(key="query_source").set_value("a sound class").run()
    healthy(at)
    assert _texts(at.warning) == [] and _texts(at.error) == []
    [answer] = _texts(at.success)
    assert answer.startswith("Most like the sound class birds: ")
    best = answer.split(": ")[1].split(" (")[0]
    assert best.split()[0] in ("east", "west") and at.selectbox(key="listen_tile").value == best
    layers = _layers(at)
    assert {"heatmap", "best_cells", "best_labels"} <= set(layers)
    similarity = sorted(float(t["similarity"]) for t in layers["tiles"]["data"])
    assert similarity[0] == 0.0 and similarity[-1] == 1.0  # one ranking over the whole region's 8 cells
    assert len(set(similarity)) == 8
    assert any(b.label.startswith("heat-class-birds-") for b in at.get("download_button"))


def test_a_bad_catalogue_is_one_line_and_the_app_keeps_working(env, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "catalog.json").write_text('{"type": "Catalog", ')
    at = _open(broken)
    assert _texts(at.error) == [f"{broken / 'catalog.json'}: not a readable STAC catalogue (not valid JSON)"]
    assert not at.get("deck_gl_json_chart")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "catalog.json").write_text(json.dumps({"type": "Catalog", "id": "x", "stac_version": "1.1.0",
                                                    "description": "nothing", "links": []}))
    at.text_input(key="scene_path").input(str(empty)).run()
    healthy(at)
    assert _texts(at.error) == [f"{empty / 'catalog.json'}: the catalogue has no items (no mapped input)"]
    at.text_input(key="scene_path").input(str(env["out"])).run()
    healthy(at)
    assert _texts(at.error) == [] and "soundscape" in _layers(at)


def test_a_folder_of_mapped_runs_without_a_catalogue_is_offered_to_build_it(env, tmp_path):
    folder = tmp_path / "runs"
    for stem in ("west", "east"):
        shutil.copytree(env["out"] / stem, folder / stem)
    at = _open(folder)
    [offer] = _infos(at)
    assert offer.startswith("runs holds 2 mapped inputs but no catalog.json: build it")
    assert not at.get("deck_gl_json_chart") and not (folder / "catalog.json").exists()
    at.button(key="catalogue_button").click().run()
    healthy(at)
    assert _texts(at.success) == ["Built catalog.json of runs (python -m geo.catalog): 2 items, 4 mosaics."]
    assert (folder / "catalog.json").is_file() and "soundscape" in _layers(at) and _infos(at) == []
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    at.text_input(key="scene_path").input(str(nothing)).run()
    healthy(at)
    expected = f"{nothing}: no catalog.json and nothing mapped here (no folder with a run.json of python -m geo.map)"
    assert _texts(at.error) == [expected]


def test_a_region_whose_embeddings_span_two_crss_says_what_is_not_supported(env, tmp_path):
    region = read_region(env["out"] / "catalog.json")
    assert query_refusal(region, env["hash"]) == ""
    moved = tmp_path / "embeddings_utm17.tif"  # one input's embeddings in another CRS, as geo.mosaic writes
    with rasterio.open(env["out"] / "west" / "embeddings.tif") as ds:  # one VRT per CRS for such inputs
        profile = {**ds.profile, "crs": "EPSG:32617"}
        with rasterio.open(moved, "w", **profile) as out:
            out.write(ds.read())
    split = Region(region.root, region.items, {**region.mosaics,
                                               "embeddings": (moved, region.mosaics["embeddings"][0])})
    assert query_refusal(split, env["hash"]) == (
        "Sound query not available: the embeddings of out are in 2 CRSs (EPSG:32617, EPSG:32618), one mosaic each, "
        "and the app queries one; rebuild them in one CRS with python -m geo.catalog out --mosaic-crs EPSG:<code>.")
    assert np.isfinite(read_region(env["out"] / "catalog.json").items[0].bbox).all()
