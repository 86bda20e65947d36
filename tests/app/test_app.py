"""The Streamlit app on the quick demo, driven by Streamlit's AppTest (no browser).

Covers: the page renders a deck.gl map of the demo (imagery, soundscape, tiles) without a web
basemap; layer switches and opacities; a sound query with the shared robin recording adds the
heatmap layer, its legend and its download; a gallery query and the tile listening panel; a query by
description (the recordings used, or one warning when none matches); bad
uploads (corrupt GeoTIFF, text named .wav, wrong type, too large) give one error line and the app
keeps working; the Landsat sample (600x coarser) is not mapped at the demo bundle's 0.5 m but shown, with why;
an all-nodata upload is refused at upload; an uploaded GeoTIFF is mapped through geo.map with a progress bar (the
box offering it goes); layers and the query stay through backend, bundle and scene switches; bundle folders are
validated; the app's file access rules (app.access): only its own bundles without --allow-server-paths, no server
path in messages, gallery recordings outside their data folder are not played. Map basics: the "About this map" line
and the scale bar, the tooltip's fields (tile centre, land cover, sounds, the query's similarity and probability),
the best cells marked on the map, a click on a tile (a selection as Streamlit sends it) choosing the tile listened
to, and the class layers' quieter default opacities while a heatmap is shown.
"""
from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from streamlit.testing.v1 import AppTest

from app import mapping
from app.access import SERVER_PATHS_NOTE
from app.scenes import LANDSAT, SERVER, UPLOAD, UploadError, check_upload_name, sources
from app.state import MAX_AUDIO_MB, MAX_UPLOAD_MB, map_key, parse_options, sha256_hex
from model.bundle.files import META_FILE, WEIGHTS_FILE
from tests.app.page import deck_spec, healthy

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
ROBIN = SHARED / "audio" / "robin.ogg"
CORRUPT = SHARED / "geotiff" / "corrupt.tif"
APP = str(ROOT / "app" / "main.py")
TIMEOUT = 180


@pytest.fixture
def env(quick_demo, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("GEOAUDIO_DEMO_DIR", str(quick_demo.root))
    monkeypatch.setenv("GEOAUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GEOAUDIO_BUNDLES", str(tmp_path / "bundles"))
    monkeypatch.delenv("GEOAUDIO_ALLOW_SERVER_PATHS", raising=False)
    return quick_demo


def _start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    healthy(at)
    return at


def _layer_ids(at: AppTest) -> list[str]:
    return [layer["id"] for layer in deck_spec(at)["layers"]]


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_page_shows_the_demo_map_without_a_web_basemap(env):
    at = _start()
    assert _errors(at) == []
    deck = deck_spec(at)
    assert _layer_ids(at) == ["imagery", "soundscape", "tiles"]
    assert "mapProvider" not in deck and deck["mapStyle"].startswith("data:application/json")  # no tile server
    with rasterio.open(env.scene) as ds:
        lon_lat = rasterio.warp.transform(ds.crs, "EPSG:4326", [(ds.bounds.left + ds.bounds.right) / 2],
                                          [(ds.bounds.bottom + ds.bounds.top) / 2])
    view = deck["initialViewState"]
    assert view["longitude"] == pytest.approx(lon_lat[0][0], abs=1e-4)
    assert view["latitude"] == pytest.approx(lon_lat[1][0], abs=1e-4)
    imagery = deck["layers"][0]
    assert imagery["@@type"] == "BitmapLayer" and imagery["image"].startswith("data:image/")
    assert len(imagery["bounds"]) == 4
    tiles = deck["layers"][-1]
    assert tiles["pickable"] and len(tiles["data"]) == (384 // 64) ** 2
    assert "{sound_1}" in at.get("deck_gl_json_chart")[0].proto.tooltip
    assert "Soundscape" in _markdown(at) and "birdsong" in _markdown(at)
    labels = [b.label.split(" (")[0] for b in at.get("download_button")]
    run = json.loads((env.map_dir / "run.json").read_text())
    assert sorted(labels) == sorted(run["products"] + ["run.json"])


def test_layer_switches_and_opacity_change_the_deck(env):
    at = _start()
    at.checkbox(key="layer_landcover").check().run()
    at.slider(key="opacity_landcover").set_value(0.8).run()
    at.checkbox(key="layer_imagery").uncheck().run()
    at.checkbox(key="layer_tiles").uncheck().run()
    healthy(at)
    assert _layer_ids(at) == ["landcover", "soundscape"]
    assert deck_spec(at)["layers"][0]["opacity"] == pytest.approx(0.8)
    assert "Land cover" in _markdown(at) and "forest" in _markdown(at)
    at.checkbox(key="layer_web").check().run()
    assert deck_spec(at).get("mapProvider") == "carto"


def test_the_soundscape_uncertainty_layer_shows_the_entropy_band(env):
    from app.layers import uncertainty_layer_image

    at = _start()
    assert not at.checkbox(key="layer_uncertainty").value  # off by default
    at.checkbox(key="layer_uncertainty").check().run()
    healthy(at)
    assert _layer_ids(at) == ["imagery", "soundscape", "uncertainty", "tiles"]
    layer = deck_spec(at)["layers"][2]
    assert layer["@@type"] == "BitmapLayer" and layer["opacity"] == pytest.approx(0.6)
    assert "Soundscape uncertainty" in _markdown(at) and "all equally likely" in _markdown(at)
    with rasterio.open(env.map_dir / "soundscape_scores.tif") as ds:
        assert ds.descriptions[-1] == "uncertainty"
    assert uncertainty_layer_image(env.map_dir / "soundscape.tif") is None  # a raster without the band


def test_sound_query_with_robin_adds_the_heatmap_and_keeps_working_after_bad_audio(env):
    at = _start()
    uploader = at.get("file_uploader")[0]
    assert uploader.proto.max_upload_size_mb == MAX_AUDIO_MB  # Streamlit itself refuses a larger upload
    assert uploader.proto.label.endswith(f"at most {MAX_AUDIO_MB} MB and 10 minutes)")
    uploader.set_value(("robin.ogg", ROBIN.read_bytes(), "audio/ogg")).run()
    healthy(at)
    assert _errors(at) == []
    assert _layer_ids(at) == ["imagery", "soundscape", "heatmap", "tiles", "best_cells", "best_labels"]
    heat = deck_spec(at)["layers"][2]
    assert heat["image"].startswith("data:image/png") and heat["opacity"] == pytest.approx(0.6)
    assert any("Similarity heatmap of your recording robin.ogg" in c.value for c in at.caption)
    assert "Similarity heatmap" in _markdown(at)
    assert at.success[0].value.startswith("Most like your recording robin.ogg: r")
    best = at.success[0].value.split(": ")[1].split(" (")[0]
    assert at.selectbox(key="listen_tile").value == best
    # the heatmap download is named after the query
    assert any(b.label.startswith("heat-robin-") for b in at.get("download_button"))
    at.checkbox(key="layer_heatmap").uncheck().run()
    assert "heatmap" not in _layer_ids(at)
    at.get("file_uploader")[0].set_value(("notes.wav", b"this is not audio", "audio/wav")).run()
    healthy(at)
    [error] = _errors(at)
    assert error == "audio rejected: notes.wav: not a readable audio file (wav, flac, ogg, mp3)"
    assert _layer_ids(at) == ["imagery", "soundscape", "tiles"]


def test_gallery_query_and_listening_to_a_tile(env):
    at = _start()
    at.radio(key="query_source").set_value("a gallery recording").run()
    healthy(at)
    assert "heatmap" in _layer_ids(at)
    assert len(at.get("audio")) >= 2  # the picked recording and the tile's nearest recordings
    at.selectbox(key="listen_tile").set_value("r0 c0").run()
    text = _markdown(at)
    assert "Top sounds:" in text and "recording 1000" in text
    assert any(b.label.startswith("heat-gallery-1000") for b in at.get("download_button"))
    at.radio(key="query_source").set_value("a sound class").run()
    assert at.success[0].value.startswith("Most like the sound class")
    name = at.selectbox(key="query_class").value
    assert any(b.label.startswith(f"heat-class-{name.replace(' ', '-')}-") for b in at.get("download_button"))


def test_a_description_queries_the_gallerys_titles_and_descriptions(env):
    at = _start()
    at.radio(key="query_source").set_value("a description").run()
    at.text_input(key="query_text").input("a dog barking").run()  # only recording 100021 has a dog
    healthy(at)
    assert _errors(at) == [] and "heatmap" in _layer_ids(at)
    assert any('Similarity heatmap of the description "a dog barking"' in c for c in _captions(at))
    assert "Water on lakeshore (recording 100021, score" in _markdown(at)
    players = len(at.get("audio"))
    assert any(b.label.startswith("heat-text-a-dog-barking-") for b in at.get("download_button"))
    at.text_input(key="query_text").input("thunder").run()
    healthy(at)
    assert ('no gallery recording\'s title or description matches "thunder" (the gallery has 40 recordings with text)'
            in [w.value for w in at.warning])
    assert "heatmap" not in _layer_ids(at)
    assert players - len(at.get("audio")) == 1  # the matching recording's player (the same tile is listened to)


def test_heatmap_file_names_say_what_was_asked():
    from app.sound_query import heat_name

    assert heat_name("robin", "0123456789abcdef") == "heat-robin-01234567.tif"
    assert heat_name("class-human activity", "ab" * 8) == "heat-class-human-activity-abababab.tif"
    assert heat_name("../../etc/passwd", "f" * 16) == "heat-etc-passwd-ffffffff.tif"  # never a path
    assert heat_name("???", "0" * 16) == "heat-query-00000000.tif"


def test_bad_uploads_give_one_error_line_and_the_app_keeps_working(env):
    at = _start()
    at.radio(key="scene_source").set_value(UPLOAD).run()
    at.get("file_uploader")[0].set_value(("corrupt.tif", CORRUPT.read_bytes(), "image/tiff")).run()
    healthy(at)
    [error] = _errors(at)
    assert error.startswith("upload rejected: corrupt.tif: cannot read pixels") and "\n" not in error
    assert not at.get("deck_gl_json_chart")
    assert not list((Path(os.environ["GEOAUDIO_CACHE"]) / "uploads").glob("**/*"))  # nothing half-kept
    at.radio(key="scene_source").set_value(sources(env.scene, None, False)[0]).run()
    healthy(at)
    assert _errors(at) == [] and "imagery" in _layer_ids(at)


def test_an_all_nodata_upload_is_refused_at_upload_with_its_reason(env, tmp_path):
    from rasterio.transform import from_origin

    empty = tmp_path / "empty.tif"
    with rasterio.open(empty, "w", driver="GTiff", width=256, height=192, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32618", transform=from_origin(500_000, 4_000_000, 0.5, 0.5)) as ds:
        ds.write(np.zeros((3, 192, 256), np.uint8))
    at = _start()
    at.radio(key="scene_source").set_value(UPLOAD).run()
    uploader = at.get("file_uploader")[0]
    assert uploader.proto.max_upload_size_mb == MAX_UPLOAD_MB  # the widget's own limit is the one its label states
    assert f"at most {MAX_UPLOAD_MB} MB" in uploader.proto.label
    uploader.set_value(("empty.tif", empty.read_bytes(), "image/tiff")).run()
    healthy(at)
    assert _errors(at) == ["upload rejected: empty.tif: every pixel is nodata, nothing to map"]
    assert not at.button and not at.get("deck_gl_json_chart")  # refused at upload: nothing to map or preview
    assert not list((Path(os.environ["GEOAUDIO_CACHE"]) / "uploads").glob("**/*"))  # no file left behind


def test_upload_limits_match_the_server_setting():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB
    with pytest.raises(UploadError, match=f"more than the upload limit of {MAX_UPLOAD_MB} MB"):
        check_upload_name("big.tif", (MAX_UPLOAD_MB + 1) * 1024 * 1024)
    with pytest.raises(UploadError, match="not a GeoTIFF"):
        check_upload_name("photo.png", 10)


def test_landsat_sample_is_not_mapped_at_the_demo_bundles_resolution_but_shown(env):
    if not (SHARED / "geotiff" / "RGB.byte.tif").is_file():
        pytest.skip("../shared/data/geotiff/RGB.byte.tif is not present")
    at = _start()
    at.radio(key="scene_source").set_value(LANDSAT).run()
    healthy(at)
    assert _errors(at) == []
    [line] = [w.value for w in at.warning]  # why it is not mapped (geo.map's own refusal) and what bundle would fit
    assert line == ("Not mapped: RGB.byte.tif: its pixels are 300 m, 600x coarser than the bundle's 0.5 m; mapping it "
                    "would upsample every tile (more than 8x is refused; python -m geo.map --allow-resample maps it "
                    "anyway); a bundle trained at ≥ 37.6 m per pixel would fit it.")
    assert _layer_ids(at) == ["imagery"]  # the imagery preview alone
    preview = deck_spec(at)["layers"][0]
    assert preview["image"].startswith("data:image/png") and len(preview["bounds"]) == 4  # PNG: nodata is clear
    [caption] = [c for c in _captions(at) if c.startswith("Imagery of the Landsat sample")]
    assert caption.endswith("; CRS EPSG:32618 (WGS 84 / UTM zone 18N); 300 m per pixel (791 x 718 pixels).")
    assert "footprint 237 km x 216 km around 24.5570° N, 77.7578° W" in caption
    assert not at.button  # nothing is offered to map
    assert str(SHARED) not in line + caption


def test_the_fitting_bundle_resolution_follows_geo_maps_own_refusal():
    from geo.grid import TileGrid, resample_refusal
    from geo.raster import open_raster

    landsat = SHARED / "geotiff" / "RGB.byte.tif"
    if not landsat.is_file():
        pytest.skip("../shared/data/geotiff/RGB.byte.tif is not present")
    with open_raster(landsat) as src:
        plan = mapping.Plan(1, (1, 1), "", "refused", TileGrid.from_source(src, 64, 0.5).resolution_factor)
        fit, rough = mapping.fitting_gsd(plan, 0.5)
        assert (fit, rough) == (37.6, False)
        assert resample_refusal(TileGrid.from_source(src, 64, fit), "x") is None  # mapped at that resolution
        assert resample_refusal(TileGrid.from_source(src, 64, 37.5), "x")  # refused just below it
    too_many = mapping.Plan(80_000, (200, 400), "")
    assert mapping.fitting_gsd(too_many, 0.5) == (1.0, True)  # 4x the tiles: twice the metres per pixel, roughly
    assert mapping.not_mapped(Path("big.tif"), too_many, 0.5).endswith(
        "; a bundle trained at ≥ ~1 m per pixel would fit it.")
    assert mapping.not_mapped(Path("ok.tif"), mapping.Plan(100, (10, 10), ""), 0.5) == ""


def _extract(src: Path, dst: Path, size: int) -> Path:
    """The top-left ``size`` x ``size`` pixels of ``src`` as a GeoTIFF (same CRS and grid)."""
    with rasterio.open(src) as ds:
        window = Window(0, 0, size, size)
        profile = {**ds.profile, "width": size, "height": size, "transform": ds.window_transform(window),
                   "driver": "GTiff", "compress": "deflate", "photometric": "RGB", "tiled": False}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        data = ds.read(window=window)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def test_run_map_feeds_the_progress_callback(env, tmp_path):
    from model.bundle import load

    scene = _extract(env.scene, tmp_path / "corner.tif", 192)
    seen: list[tuple[int, int]] = []
    plan = mapping.plan(scene, load(env.bundle))
    warnings = mapping.run_map(scene, env.bundle, "torch", tmp_path / "out" / "corner", lambda n, t: seen.append((n, t)))
    assert plan.tiles == 9 and seen and seen[-1] == (9, 9) and warnings == []
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert mapping.finished_map(tmp_path / "out" / "corner", scene, env.info["bundle_hash"])
    with pytest.raises(mapping.MapError, match="corrupt.tif"):
        mapping.run_map(CORRUPT, env.bundle, "torch", tmp_path / "out" / "corrupt")
    assert not (tmp_path / "out" / "corrupt").exists()


def test_an_uploaded_geotiff_is_mapped_with_a_progress_bar(env, tmp_path):
    scene = _extract(env.scene, tmp_path / "corner.tif", 128)
    at = _start()
    at.selectbox(key="listen_tile").set_value("r5 c5").run()  # a tile the small scene does not have
    at.radio(key="scene_source").set_value(UPLOAD).run()
    at.get("file_uploader")[0].set_value(("corner.tif", scene.read_bytes(), "image/tiff")).run()
    healthy(at)
    assert "4 tiles" in at.info[0].value and not at.get("deck_gl_json_chart")
    at.button(key="map_button").click().run()
    healthy(at)
    assert _errors(at) == []
    assert not [i.value for i in at.info if "not mapped yet" in i.value] and not at.button  # the box is gone
    assert at.get("progress")[0].proto.value == 100
    deck = deck_spec(at)
    assert len(deck["layers"][-1]["data"]) == 4
    assert at.selectbox(key="listen_tile").value == "r0 c0"
    [run] = list((tmp_path / "cache" / "maps").glob("*/corner/run.json"))
    assert json.loads(run.read_text())["backend"]["name"] == "torch"  # what auto took here
    assert run.parent.parent.name == map_key(f"sha256:{sha256_hex(scene.read_bytes())}", env.info["bundle_hash"],
                                             "torch")  # keyed by the backend auto took
    at.selectbox(key="backend").set_value("torch").run()  # the same backend by name: the same map, not mapped again
    healthy(at)
    assert not at.button and len(deck_spec(at)["layers"][-1]["data"]) == 4


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def _linked_bundle(folder: Path, source: Path) -> Path:
    """A bundle folder whose bundle.json and weights are links to ``source``'s (same content hash)."""
    folder.mkdir(parents=True)
    for name in (META_FILE, WEIGHTS_FILE):
        (folder / name).symlink_to(source / name)
    return folder


def test_without_the_flag_only_the_apps_own_bundles_are_offered(env, tmp_path):
    bundles = tmp_path / "bundles"
    _linked_bundle(bundles / "mine", env.bundle)
    (bundles / "broken").mkdir()
    (bundles / "broken" / META_FILE).write_text("{not json")
    at = _start()
    assert at.radio(key="bundle_source").options == ["Demo bundle", "broken", "mine"]
    assert not [t for t in at.text_input if t.key == "bundle_path"]  # no box takes a folder path
    assert SERVER_PATHS_NOTE not in _captions(at)
    at.radio(key="bundle_source").set_value("broken").run()
    healthy(at)
    [error] = _errors(at)
    assert error.startswith("bundle rejected: broken") and str(tmp_path) not in error and "\n" not in error
    at.radio(key="bundle_source").set_value("mine").run()
    assert _errors(at) == [] and "imagery" in _layer_ids(at)


def test_gallery_recordings_outside_the_data_folder_are_not_played(env, tmp_path):
    from model.bundle import load
    from model.bundle.gallery import gallery_path, gallery_stamp, load_gallery, write_gallery

    rows, embeddings = load_gallery(load(env.bundle))
    rows["audio_path"] = ["/etc/passwd", f"../{rows['audio_path'].iloc[1]}"] + rows["audio_path"].tolist()[2:]
    hostile = load(_linked_bundle(tmp_path / "bundles" / "hostile", env.bundle))
    write_gallery(gallery_path(hostile), rows[list(rows.columns)], embeddings, gallery_stamp(hostile, env.pairs, "audio"))
    at = _start()
    at.radio(key="bundle_source").set_value("hostile").run()
    healthy(at)
    assert ("2 recordings of this bundle's gallery name files outside its data folder: they are not played."
            in [w.value for w in at.warning])
    at.radio(key="query_source").set_value("a gallery recording").run()
    at.selectbox(key="query_gallery").set_value(int(rows["key"].iloc[0])).run()
    assert "(recording not found on this machine)" in _captions(at)


def test_bundle_folder_is_validated_with_one_line_with_the_flag(env, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOAUDIO_ALLOW_SERVER_PATHS", "1")
    at = _start()
    assert SERVER_PATHS_NOTE in _captions(at)
    at.radio(key="bundle_source").set_value("Bundle folder").run()
    at.text_input(key="bundle_path").input(str(tmp_path)).run()
    healthy(at)
    [error] = _errors(at)
    assert error == f"bundle rejected: {tmp_path}: not a bundle (bundle.json missing)"
    at.text_input(key="bundle_path").input(str(env.bundle)).run()
    assert _errors(at) == [] and "imagery" in _layer_ids(at)


def test_server_paths_only_with_the_flag(env, monkeypatch):
    assert SERVER not in sources(env.scene, None, parse_options([]).allow_server_paths)
    assert parse_options(["--allow-server-paths"]).allow_server_paths
    monkeypatch.setenv("GEOAUDIO_ALLOW_SERVER_PATHS", "1")
    at = _start()
    at.radio(key="scene_source").set_value(SERVER).run()
    at.text_input(key="scene_path").input(str(env.scene)).run()
    healthy(at)
    assert _errors(at) == [] and "imagery" in _layer_ids(at)
    at.text_input(key="scene_path").input(str(env.root / "missing.tif")).run()
    assert _errors(at) == [f"{env.root / 'missing.tif'}: no such file on the server"]


def test_heat_colors_are_transparent_where_there_is_no_data():
    from app.layers import heat_colors

    rgba = heat_colors(np.array([[0.0, 1.0, np.nan]]))
    assert list(rgba[0, :, 3]) == [255, 255, 0]
    assert rgba[0, 0, :3].sum() < rgba[0, 1, :3].sum()  # magma: dark for 0, bright for 1


def test_a_bundle_whose_gallery_is_collapsed_gets_one_warning_line(env, tmp_path):
    from model.bundle import load
    from model.bundle.gallery import gallery_path, gallery_stamp, load_gallery, write_gallery

    rows, embeddings = load_gallery(load(env.bundle))
    collapsed = load(_linked_bundle(tmp_path / "bundles" / "collapsed", env.bundle))
    same = np.repeat(embeddings[:1], len(embeddings), axis=0)  # every recording embedded alike
    write_gallery(gallery_path(collapsed), rows, same, gallery_stamp(collapsed, env.pairs, "spectrogram"))
    at = _start()
    assert not [w.value for w in at.warning if "collapsed" in w.value]  # the demo's own gallery is spread out
    at.radio(key="bundle_source").set_value("collapsed").run()
    healthy(at)
    [warning] = [w.value for w in at.warning if "collapsed" in w.value]
    assert "mean cosine similarity" in warning and "1.0000" in warning and "\n" not in warning


def _retrained_bundle(folder: Path, source: Path) -> Path:
    """A bundle folder with ``source``'s weights (a link) and its bundle.json with one more provenance
    field: another content hash, so no map of the demo is cached for it."""
    folder.mkdir(parents=True)
    meta = json.loads((source / META_FILE).read_text())
    meta["provenance"]["note"] = "the same weights under another hash"
    (folder / META_FILE).write_text(json.dumps(meta))
    (folder / WEIGHTS_FILE).symlink_to(source / WEIGHTS_FILE)
    return folder


def _layer_state(at: AppTest) -> tuple:
    return (at.checkbox(key="layer_landcover").value, at.slider(key="opacity_landcover").value,
            at.checkbox(key="layer_tiles").value, at.radio(key="query_source").value,
            at.selectbox(key="query_class").value)


def test_layers_and_the_query_stay_through_backend_bundle_and_scene_switches(env, tmp_path):
    _retrained_bundle(tmp_path / "bundles" / "other", env.bundle)
    at = _start()
    at.checkbox(key="layer_landcover").check().run()
    at.slider(key="opacity_landcover").set_value(0.8).run()
    at.checkbox(key="layer_tiles").uncheck().run()
    at.radio(key="query_source").set_value("a sound class").run()
    name = at.selectbox(key="query_class").options[1]
    at.selectbox(key="query_class").set_value(name).run()
    before = _layer_state(at)
    assert before == (True, 0.8, False, "a sound class", name)
    assert _layer_ids(at) == ["imagery", "landcover", "soundscape", "heatmap", "best_cells", "best_labels"]
    at.selectbox(key="backend").set_value("torch").run()  # what auto took: the demo's own map, nothing to map
    assert not at.button and _layer_state(at) == before
    at.radio(key="bundle_source").set_value("other").run()  # not mapped with it: no layer or query widgets
    healthy(at)
    assert "not mapped yet" in at.info[0].value and not at.get("deck_gl_json_chart")
    assert not [c for c in at.checkbox if c.key == "layer_landcover"]
    at.radio(key="bundle_source").set_value("Demo bundle").run()
    at.selectbox(key="backend").set_value("auto").run()
    healthy(at)
    assert _layer_state(at) == before
    assert _layer_ids(at) == ["imagery", "landcover", "soundscape", "heatmap", "best_cells", "best_labels"]
    assert deck_spec(at)["layers"][1]["opacity"] == pytest.approx(0.8)
    assert at.success[0].value.startswith(f"Most like the sound class {name}")
    at.radio(key="scene_source").set_value(LANDSAT).run()  # a preview only
    at.radio(key="scene_source").set_value(sources(env.scene, None, False)[0]).run()
    assert _layer_state(at) == before


# ---- map basics: about line, scale bar, tooltips, best cells, clicks, quieter defaults ----------------------------

def _layer(at: AppTest, layer_id: str) -> dict:
    [layer] = [layer for layer in deck_spec(at)["layers"] if layer["id"] == layer_id]
    return layer


def _tile(at: AppTest, tile: str) -> dict:
    [rec] = [r for r in _layer(at, "tiles")["data"] if r["tile"] == tile]
    return rec


def test_about_this_map_line_and_scale_bar(env):
    from app.layers import metres_per_pixel

    at = _start()
    [about] = [c for c in _captions(at) if c.startswith("About this map: ")]
    with rasterio.open(env.scene) as ds:
        left, bottom, right, top = ds.bounds
        assert f"CRS EPSG:{ds.crs.to_epsg()} (WGS 84 / UTM zone 32N)" in about
        assert f"(x {left:,.1f} to {right:,.1f} m, y {bottom:,.1f} to {top:,.1f} m)" in about
        assert f"imagery {ds.res[0]:g} m per pixel ({ds.width} x {ds.height} pixels)" in about
    assert "extent 191 m x 192 m on the ground" in about and about.endswith("map cells 32 m (6 x 6).")
    [bar] = [m.value for m in at.markdown if "scale at the initial zoom" in m.value]
    view = deck_spec(at)["initialViewState"]
    width_px = float(bar.split("width:")[1].split("px")[0])
    length_m = float(bar.split("</span>")[1].split(" m")[0])
    assert length_m / width_px == pytest.approx(metres_per_pixel(view["latitude"], view["zoom"]), rel=0.01)


def test_scale_bar_is_a_round_length_that_fits():
    from app.layers import metres_per_pixel, scale_bar

    assert scale_bar(0.0, 0.0) == (10_000_000.0, pytest.approx(127.76, abs=0.01))  # 10 000 km at zoom 0
    for lat, zoom in ((48.2, 16.98), (-33.9, 12.3), (60.0, 19.5)):
        length, px = scale_bar(lat, zoom, 160)
        assert 160 / 2.5 < px <= 160 and f"{length:.0e}"[0] in "125"
        assert length == pytest.approx(px * metres_per_pixel(lat, zoom))


def test_coordinates_are_written_in_their_crs_units():
    from app.layers import crs_bounds, crs_coords

    assert crs_coords(664_920, 5_343_080, "EPSG:32632") == "x 664,920.0 m, y 5,343,080.0 m (EPSG:32632)"
    assert crs_coords(11.22, 48.2, "EPSG:4326") == "x 11.220000°, y 48.200000° (EPSG:4326)"
    assert crs_bounds([1.0, 3.0], [4.0, 2.0], "EPSG:3857") == "x 1.0 to 3.0 m, y 2.0 to 4.0 m"


def test_hover_shows_centre_land_cover_sounds_and_the_querys_similarity(env):
    from app.layers import crs_coords

    at = _start()
    tip = at.get("deck_gl_json_chart")[0].proto.tooltip
    assert all(f"{{{k}}}" in tip for k in ("tile", "centre", "degrees", "landcover", "sound_1", "score_1", "near_1"))
    assert "{similarity}" not in tip  # no query yet
    with rasterio.open(env.map_dir / "landcover.tif") as ds:
        block = ds.read(1)[64 * 2:64 * 3, 64 * 4:64 * 5]  # tile r2 c4: 64 x 64 pixels of 0.5 m
    with rasterio.open(env.map_dir / "embeddings.tif") as ds:
        x, y = ds.transform @ (4.5, 2.5)
        lon, lat = rasterio.warp.transform(ds.crs, "EPSG:4326", [x], [y])
        crs = ds.crs
    rec = _tile(at, "r2 c4")
    counts = np.bincount(block[block != 255].ravel())
    names = [c["name"] for c in json.loads((env.bundle / META_FILE).read_text())["heads"]["landcover"]["classes"]]
    assert rec["landcover"] == f"{names[int(counts.argmax())]} ({counts.max() / counts.sum():.0%})"
    assert rec["centre"] == crs_coords(x, y, crs) == f"x {x:,.1f} m, y {y:,.1f} m (EPSG:32632)"
    assert rec["degrees"] == f"{lat[0]:.5f}° N, {lon[0]:.5f}° E"
    at.radio(key="query_source").set_value("a gallery recording").run()
    healthy(at)
    tip = at.get("deck_gl_json_chart")[0].proto.tooltip
    assert "{similarity}" in tip and "{probability}" not in tip  # the quick demo's bundle has no calibration
    best, score = at.success[0].value.split(": ")[1].split(" (")[:2]
    assert _tile(at, best)["similarity"] == score.split(")")[0]
    assert "Land cover (majority):" in _markdown(at)


def test_query_values_per_tile_with_and_without_calibration():
    from app.layers import tooltip, with_query

    records = [{"tile": "r0 c0", "row": 0, "col": 0}, {"tile": "r0 c1", "row": 0, "col": 1},
               {"tile": "r3 c3", "row": 3, "col": 3}]
    array = np.full((3, 1, 2), np.nan, np.float32)
    array[0] = [[0.25, np.nan]]
    plain = with_query(records, array)
    assert [r["similarity"] for r in plain] == ["0.25", "no data", "no data"] and "probability" not in plain[0]
    array[2, 0, 0] = 0.64
    calibrated = with_query(records, array)
    assert [r["probability"] for r in calibrated] == ["64%", "no data", "no data"]
    assert "{probability}" in tooltip(calibrated)["html"] and "probability" not in records[0]  # records kept


def test_best_cells_are_marked_on_the_map_after_a_query(env):
    at = _start()
    assert "best_cells" not in _layer_ids(at)
    at.radio(key="query_source").set_value("a gallery recording").run()
    healthy(at)
    listed = [part.split(" (")[0] for part in at.success[0].value.split(": ")[1].split(", ")]
    outline, labels = _layer(at, "best_cells"), _layer(at, "best_labels")
    assert [d["cell"] for d in outline["data"]] == listed and [d["rank"] for d in labels["data"]] == ["1", "2", "3"]
    assert not outline["pickable"] and not labels["pickable"]  # clicks reach the tiles under them
    for mark in outline["data"]:
        tile = np.array(sorted(map(tuple, _tile(at, mark["cell"])["polygon"][:4])))
        assert np.allclose(np.array(sorted(map(tuple, mark["polygon"][:4]))), tile, atol=1e-6)  # the same corners
        assert np.allclose(mark["position"], tile.mean(axis=0), atol=1e-6)
    assert _layer_ids(at)[-3:] == ["tiles", "best_cells", "best_labels"]  # drawn over the tile outlines


def test_only_likely_cells_are_marked_when_the_bundle_is_calibrated():
    from app.layers import marked_cells
    from geo.query import LIKELY

    array = np.full((3, 2, 2), np.nan, np.float32)
    array[0] = [[0.9, 0.1], [1.0, 0.5]]
    assert marked_cells(array) == [(1, 1, 0), (2, 0, 0), (3, 1, 1)]  # uncalibrated: the three best by rank
    array[2] = [[LIKELY, 0.1], [0.8, 0.3]]
    assert marked_cells(array) == [(1, 1, 0), (2, 0, 0)]
    array[2] = 0.2
    assert marked_cells(array) == []  # "No place in this scene sounds like ...": nothing marked


def _selection(layer: str, index: int, obj: dict) -> dict:
    """A pydeck chart's selection as the frontend sends it (DeckGlJsonChart: single-object mode)."""
    return {"selection": {"indices": {layer: [index]}, "objects": {layer: [obj]}}}


def _run_with_selection(at: AppTest, selection: dict) -> None:
    """Rerun as the browser does after a click on the map: the chart's widget state carries the
    selection (AppTest has no pydeck element to click, so the state is added to the others)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    states = at._tree.get_widget_states()
    states.widgets.append(WidgetState(id=at.get("deck_gl_json_chart")[0].proto.id, string_value=json.dumps(selection)))
    at._run(states)
    healthy(at)


def test_a_selection_as_streamlit_returns_it_names_the_tile():
    from streamlit.elements.deck_gl_json_chart import PydeckSelectionSerde

    from app.layers import selected_tile

    serde = PydeckSelectionSerde()
    event = serde.deserialize(json.dumps(_selection("tiles", 9, {"tile": "r1 c3", "row": 1, "col": 3})))
    assert selected_tile(event) == "r1 c3"
    assert selected_tile(serde.deserialize(None)) is None  # nothing selected
    assert selected_tile(serde.deserialize(json.dumps(_selection("best_cells", 0, {"cell": "r1 c3"})))) is None
    assert selected_tile(None) is None


def test_clicking_a_tile_on_the_map_listens_to_it(env):
    at = _start()
    chart = at.get("deck_gl_json_chart")[0]
    assert chart.proto.selection_mode and chart.proto.id.endswith(_deck_key(env))
    rec = _layer(at, "tiles")["data"][9]
    assert rec["tile"] != at.selectbox(key="listen_tile").value
    click = _selection("tiles", 9, rec)
    _run_with_selection(at, click)
    assert at.selectbox(key="listen_tile").value == rec["tile"]
    assert f"**Top sounds:** {rec['sound_1']} {rec['score_1']}" in _markdown(at)
    at.selectbox(key="listen_tile").set_value("r0 c0")
    _run_with_selection(at, click)  # the dropdown still picks another tile while the click stays selected
    assert at.selectbox(key="listen_tile").value == "r0 c0"


def _deck_key(env) -> str:
    return f"map_{sha256_hex(str(env.map_dir).encode())[:12]}"


def test_class_layers_are_quieter_while_a_heatmap_is_shown_unless_moved(env):
    from app.pickers import QUIET_OPACITY

    at = _start()
    at.checkbox(key="layer_landcover").check().run()
    at.slider(key="opacity_landcover").set_value(0.8).run()  # moved by the user: kept
    assert at.slider(key="opacity_soundscape").value == pytest.approx(0.45)
    at.radio(key="query_source").set_value("a gallery recording").run()
    healthy(at)
    assert at.slider(key="opacity_soundscape").value == pytest.approx(QUIET_OPACITY)
    assert _layer(at, "soundscape")["opacity"] == pytest.approx(QUIET_OPACITY)
    assert at.slider(key="opacity_landcover").value == pytest.approx(0.8)
    at.checkbox(key="layer_heatmap").uncheck().run()  # no heatmap shown: the usual default again
    assert at.slider(key="opacity_soundscape").value == pytest.approx(0.45)
    at.checkbox(key="layer_heatmap").check().run()
    at.slider(key="opacity_soundscape").set_value(0.7).run()
    at.radio(key="query_source").set_value("a recording you upload").run()  # no query any more
    assert at.slider(key="opacity_soundscape").value == pytest.approx(0.7)
    assert _layer(at, "soundscape")["opacity"] == pytest.approx(0.7)


def _calibrated_bundle(folder: Path, source: Path, alpha: float, beta: float) -> Path:
    """``source``'s weights with a query calibration ``p(d) = 1 / (1 + exp(-(alpha + beta d)))``
    in its soundscape head (another content hash: the scene is mapped again for it)."""
    folder.mkdir(parents=True)
    meta = json.loads((source / META_FILE).read_text())
    meta["heads"]["soundscape"]["query_calibration"] = {"method": "logistic", "alpha": alpha, "beta": beta}
    (folder / META_FILE).write_text(json.dumps(meta))
    (folder / WEIGHTS_FILE).symlink_to(source / WEIGHTS_FILE)
    return folder


@pytest.mark.parametrize("alpha, answer", [(-60.0, "No place in this scene sounds like the sound class"),
                                           (60.0, "cells are more likely than not the same place")])
def test_a_calibrated_bundle_answers_with_the_probability_of_the_same_place(env, tmp_path, alpha, answer):
    _calibrated_bundle(tmp_path / "bundles" / "calibrated", env.bundle, alpha, -1e-6)
    at = _start()
    at.radio(key="bundle_source").set_value("calibrated").run()
    at.button(key="map_button").click().run()
    healthy(at)
    at.radio(key="query_source").set_value("a sound class").run()
    healthy(at)
    said = [m.value for m in (*at.success, *at.warning)]
    assert any(answer in text for text in said), said
    marks = [layer for layer in deck_spec(at)["layers"] if layer["id"] == "best_cells"]
    assert bool(marks and marks[0]["data"]) == (alpha > 0)  # no cell is marked when none is likely
