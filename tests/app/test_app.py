"""The Streamlit app on the quick demo, driven by Streamlit's AppTest (no browser).

Covers: the page renders a deck.gl map of the demo (imagery, soundscape, tiles) without a web
basemap; layer switches and opacities; a sound query with the shared robin recording adds the
heatmap layer, its legend and its download; a gallery query and the tile listening panel; bad
uploads (corrupt GeoTIFF, text named .wav, wrong type, too large) give one error line and the app
keeps working; the Landsat sample (600x coarser) is refused at the demo bundle's 0.5 m; an uploaded GeoTIFF is
mapped through geo.map with a progress bar; bundle folders are validated; the app's file access
rules (app.access): only its own bundles without --allow-server-paths, no server path in messages,
gallery recordings outside their data folder are not played.
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
from app.state import MAX_AUDIO_MB, MAX_UPLOAD_MB, parse_options
from model.bundle.files import META_FILE, WEIGHTS_FILE

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
    _healthy(at)
    return at


def _healthy(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _deck(at: AppTest) -> dict:
    charts = at.get("deck_gl_json_chart")
    assert len(charts) == 1, "expected one pydeck map"
    return json.loads(charts[0].proto.json)


def _layer_ids(at: AppTest) -> list[str]:
    return [layer["id"] for layer in _deck(at)["layers"]]


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_page_shows_the_demo_map_without_a_web_basemap(env):
    at = _start()
    assert _errors(at) == []
    deck = _deck(at)
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
    _healthy(at)
    assert _layer_ids(at) == ["landcover", "soundscape"]
    assert _deck(at)["layers"][0]["opacity"] == pytest.approx(0.8)
    assert "Land cover" in _markdown(at) and "forest" in _markdown(at)
    at.checkbox(key="layer_web").check().run()
    assert _deck(at).get("mapProvider") == "carto"


def test_sound_query_with_robin_adds_the_heatmap_and_keeps_working_after_bad_audio(env):
    at = _start()
    uploader = at.get("file_uploader")[0]
    assert uploader.proto.max_upload_size_mb == MAX_AUDIO_MB  # Streamlit itself refuses a larger upload
    assert uploader.proto.label.endswith(f"at most {MAX_AUDIO_MB} MB and 10 minutes)")
    uploader.set_value(("robin.ogg", ROBIN.read_bytes(), "audio/ogg")).run()
    _healthy(at)
    assert _errors(at) == []
    assert _layer_ids(at) == ["imagery", "soundscape", "heatmap", "tiles"]
    heat = _deck(at)["layers"][2]
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
    _healthy(at)
    [error] = _errors(at)
    assert error == "audio rejected: notes.wav: not a readable audio file (wav, flac, ogg, mp3)"
    assert _layer_ids(at) == ["imagery", "soundscape", "tiles"]


def test_gallery_query_and_listening_to_a_tile(env):
    at = _start()
    at.radio(key="query_source").set_value("a gallery recording").run()
    _healthy(at)
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
    _healthy(at)
    [error] = _errors(at)
    assert error.startswith("upload rejected: corrupt.tif: cannot read pixels") and "\n" not in error
    assert not at.get("deck_gl_json_chart")
    assert not list((Path(os.environ["GEOAUDIO_CACHE"]) / "uploads").glob("**/*"))  # nothing half-kept
    at.radio(key="scene_source").set_value(sources(env.scene, None, False)[0]).run()
    _healthy(at)
    assert _errors(at) == [] and "imagery" in _layer_ids(at)


def test_upload_limits_match_the_server_setting():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB
    with pytest.raises(UploadError, match=f"more than the upload limit of {MAX_UPLOAD_MB} MB"):
        check_upload_name("big.tif", (MAX_UPLOAD_MB + 1) * 1024 * 1024)
    with pytest.raises(UploadError, match="not a GeoTIFF"):
        check_upload_name("photo.png", 10)


def test_landsat_sample_is_refused_at_the_demo_bundles_resolution(env):
    if not (SHARED / "geotiff" / "RGB.byte.tif").is_file():
        pytest.skip("../shared/data/geotiff/RGB.byte.tif is not present")
    at = _start()
    at.radio(key="scene_source").set_value(LANDSAT).run()
    _healthy(at)
    [error] = _errors(at)
    assert error == ("RGB.byte.tif: its pixels are 300 m, 600x coarser than the bundle's 0.5 m; mapping it would "
                     "upsample every tile (more than 8x is refused; python -m geo.map --allow-resample maps it anyway)")
    assert not at.button  # nothing is offered to map


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
    _healthy(at)
    assert "4 tiles" in at.info[0].value and not at.get("deck_gl_json_chart")
    at.button(key="map_button").click().run()
    _healthy(at)
    assert _errors(at) == []
    assert at.get("progress")[0].proto.value == 100
    deck = _deck(at)
    assert len(deck["layers"][-1]["data"]) == 4
    assert at.selectbox(key="listen_tile").value == "r0 c0"
    assert list((tmp_path / "cache" / "maps").glob("*/corner/run.json"))


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
    _healthy(at)
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
    _healthy(at)
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
    _healthy(at)
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
    _healthy(at)
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
    _healthy(at)
    [warning] = [w.value for w in at.warning if "collapsed" in w.value]
    assert "mean cosine similarity" in warning and "1.0000" in warning and "\n" not in warning
