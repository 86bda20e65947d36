"""geoaudio's app: ``streamlit run app/main.py [-- --allow-server-paths]``.

Choose a scene (the built-in demo, the shared Landsat sample, an uploaded GeoTIFF, or a path on
the server when started with ``--allow-server-paths``), a bundle and a backend; the scene is mapped
with ``geo.map`` (cached per input, bundle and backend) and shown on a pydeck map whose base layer
is the imagery itself, with land-cover, soundscape and similarity-heatmap layers, tile tooltips,
a sound query, the tiles' nearest gallery recordings and downloads of every product. Clicking a
tile on the map listens to it; a scale bar (true at the initial zoom) and an "About this map" line
(CRS, extent, resolution) are under the map. With ``--allow-server-paths`` the server path may also
name a folder written by ``geo.map`` (or its ``catalog.json``): the mapped region is shown from its
catalogue and mosaics without mapping anything (:mod:`app.region_view`).

Environment: ``GEOAUDIO_DEMO_DIR`` (default ``demo/``), ``GEOAUDIO_CACHE`` (default
``~/.cache/geoaudio``), ``GEOAUDIO_ALLOW_SERVER_PATHS=1`` (same as the flag).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `streamlit run app/main.py` puts app/ first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

from app import layers, mapping  # noqa: E402
from app.access import SERVER_PATHS_NOTE, public  # noqa: E402
from app.catalog_scene import CatalogScene  # noqa: E402
from app.downloads import download_buttons, product_files  # noqa: E402
from app.panels import Query, heat_file, listen_panel, query_panel  # noqa: E402
from app.pickers import (BundleChoice, LayerChoice, concrete_backend, file_stamp, keep_values,  # noqa: E402
                         pick_backend, pick_bundle, pick_layers, pick_scene)
from app.region_view import show_region  # noqa: E402
from app.scenes import Scene  # noqa: E402
from app.state import MAX_TILES, demo_dir, parse_options  # noqa: E402
from app.view import (chosen_gallery, class_image, clicked_tile, map_key, show_map,  # noqa: E402
                      uncertainty_image)
from model.core.errors import GeoaudioError, one_line  # noqa: E402

QUERY_KEYS = ("query_source", "query_gallery", "query_class", "query_text", "listen_tile")  # kept while not drawn


@st.cache_data(max_entries=8, show_spinner="preparing the imagery ...")
def _imagery(path: str, stamp: tuple) -> tuple[str, layers.Footprint]:
    return layers.imagery(path)


@st.cache_data(max_entries=8, show_spinner=False)
def _facts(path: str, stamp: tuple) -> dict:
    from app.scenes import check_raster

    return check_raster(Path(path))


@st.cache_data(max_entries=8, show_spinner=False)
def _tiles(path: str, stamp: tuple, landcover: str | None, landcover_stamp: tuple, names: tuple) -> list[dict]:
    return layers.tile_records(path, landcover, names)


def tile_records(map_dir: Path, choice: BundleChoice) -> list[dict]:
    """The map's tile records (cached per tiles.gpkg and landcover.tif), with each tile's majority
    land-cover class when the map and the bundle have land cover; [] without tiles.gpkg."""
    tiles_path, landcover = map_dir / "tiles.gpkg", map_dir / "landcover.tif"
    if not tiles_path.is_file():
        return []
    head = choice.bundle.heads.get("landcover")
    use = head is not None and landcover.is_file()
    names = tuple(c["name"] for c in head["classes"]) if use else ()
    return _tiles(str(tiles_path), file_stamp(tiles_path), str(landcover) if use else None,
                  file_stamp(landcover) if use else (), names)


def run_info(map_dir: Path) -> dict:
    """The map's run.json ({} when unreadable)."""
    try:
        return json.loads((map_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _demo():
    from app.demo import read_demo

    return read_demo(demo_dir())


def show_preview(scene: Scene, why: str) -> None:
    """A scene the app will not map: the line saying ``why`` (and what bundle would fit), then its
    imagery alone on the map and one caption with its footprint, CRS and resolution."""
    st.warning(public(why))
    try:
        url, fp = _imagery(str(scene.path), file_stamp(scene.path))
        facts = _facts(str(scene.path), file_stamp(scene.path))
    except (GeoaudioError, OSError, ValueError) as e:
        st.caption(public(f"no imagery preview: {one_line(e)}"))
        return
    deck = layers.make_deck([layers.bitmap_layer("imagery", url, fp)], layers.view_state(fp))
    st.pydeck_chart(deck, height=layers.MAP_HEIGHT_PX)
    st.caption(public(layers.preview_caption(scene.label, fp, facts)))


def ensure_map(scene: Scene, choice: BundleChoice, backend: str, demo) -> Path | None:
    """The finished map folder of the scene with this bundle and (concrete) backend; maps it
    (button, progress bar) when needed; a scene the app will not map gets :func:`show_preview`."""
    folder = mapping.map_folder(scene.path, scene.input_id, choice.hash, backend, demo)
    stride = demo.map_stride if demo is not None and folder == demo.map_dir else None
    if mapping.finished_map(folder, scene.path, choice.hash, stride):
        return folder
    try:
        plan = mapping.plan(scene.path, choice.bundle)
    except (GeoaudioError, OSError) as e:
        st.error(public(f"cannot map {scene.label}: {one_line(e)}", {choice.path: "the bundle"}))
        return None
    why = mapping.not_mapped(scene.path, plan, choice.bundle.image_input.gsd)
    if why:
        show_preview(scene, why)
        return None
    rows, cols = plan.cells
    note = f" Note: {public(plan.warning)}." if plan.warning else ""
    box = st.empty()  # the "not mapped yet" box and its button, cleared once the map is made
    with box.container():
        st.info(f"{scene.label} is not mapped yet with this bundle and backend: {plan.tiles:,} tiles "
                f"({rows} x {cols} cells, at most {MAX_TILES:,} in the app).{note}")
        clicked = st.button("Map this scene", type="primary", key="map_button")
    if not clicked:
        return None
    bar = st.progress(0.0, text="starting geo.map ...")
    try:
        warnings = mapping.run_map(scene.path, choice.path, backend, folder,
                                   lambda n, total: bar.progress(n / max(total, 1), text=f"mapping: {n}/{total} tiles"))
    except (mapping.MapError, OSError) as e:
        bar.empty()
        st.error(public(f"mapping failed: {one_line(e)}", {choice.path: "the bundle"}))
        return None
    bar.progress(1.0, text="mapped")
    box.empty()
    for w in warnings:
        st.warning(public(w))
    return folder


def build_layers(scene: Scene, map_dir: Path, choice: BundleChoice, shown: LayerChoice, records: list[dict],
                 query: Query | None) -> tuple[list, layers.Footprint, list[str]]:
    """The deck's layers (bottom to top), the footprint to centre on, and the legends to show."""
    heads = choice.bundle.heads
    url, fp = _imagery(str(scene.path), file_stamp(scene.path))
    out, legends = [], []
    if shown.imagery:
        out.append(layers.bitmap_layer("imagery", url, fp))
    for name, on, opacity, title in (("landcover", shown.landcover, shown.landcover_opacity, "Land cover"),
                                     ("soundscape", shown.soundscape, shown.soundscape_opacity, "Soundscape")):
        path = map_dir / f"{name}.tif"
        if on and path.is_file() and name in heads:
            classes = heads[name]["classes"]
            colors = tuple(tuple(int(v) for v in c["color"][:3]) for c in classes)
            image, class_fp = class_image(str(path), file_stamp(path), colors)
            out.append(layers.bitmap_layer(name, image, class_fp, opacity))
            legends.append(layers.legend_html(title, classes))
    scores = map_dir / "soundscape_scores.tif"
    if shown.uncertainty and scores.is_file():
        found = uncertainty_image(str(scores), file_stamp(scores))
        if found is not None:
            out.append(layers.bitmap_layer("uncertainty", found[0], found[1], shown.uncertainty_opacity))
            legends.append(layers.uncertainty_legend_html())
    if query is not None and shown.heatmap:
        image, heat_fp = layers.heat_layer_image(query.similarity, query.profile)
        out.append(layers.bitmap_layer("heatmap", image, heat_fp, shown.heatmap_opacity))
        legends.append(layers.heat_legend_html())
    if shown.tiles and records:
        out.append(layers.tiles_layer(records))
    if query is not None and shown.heatmap:  # on top; not pickable, so clicks reach the tiles
        out += layers.best_cell_layers(layers.marked_cells(query.array), query.profile)
    return out, fp, legends


def about_map(map_dir: Path) -> None:
    """An expander with the run's backend, timings and warnings (from run.json)."""
    info = run_info(map_dir)
    if not info:
        return
    with st.expander("About this map"):
        timings = info.get("timings", {})
        st.markdown(f"**Backend:** {info.get('backend', {}).get('description', '?')}  \n"
                    f"**Tiles:** {timings.get('tiles', '?')} in {timings.get('total_s', '?')} s  \n"
                    f"**Bundle:** {info.get('bundle', {}).get('content_hash', '?')}  \n"
                    f"**Folder:** `{public(str(map_dir))}`")
        for w in info.get("warnings", []):
            st.caption(public(f"warning: {w}"))


def main() -> None:
    """The page."""
    st.set_page_config(page_title="geoaudio", layout="wide")
    st.title("geoaudio")
    st.caption("What places sound like, from what they look like from above.")
    options = parse_options(sys.argv[1:])
    keep_values(QUERY_KEYS)
    demo = _demo()
    if demo is None:
        st.info(public(f"The built-in demo is not built in {demo_dir()}: run `python -m app.demo` (or `make app`). "
                       "You can still upload a GeoTIFF and choose another bundle."))
    if options.allow_server_paths:
        st.caption(SERVER_PATHS_NOTE)
    scene = pick_scene(options, demo)
    choice = pick_bundle(options, demo)
    picked = pick_backend(choice) if choice is not None else "auto"
    if isinstance(scene, CatalogScene):  # a mapped region: shown as it is, never mapped again
        show_region(scene, choice, picked)
        return
    if scene is None or choice is None:
        return
    try:
        backend = concrete_backend(choice, picked)  # maps are keyed by it; queries use the backend picked (opened once)
    except (GeoaudioError, OSError) as e:
        st.error(public(f"backend not usable: {one_line(e)}", {choice.path: "the bundle"}))
        return
    map_dir = ensure_map(scene, choice, backend, demo)
    if map_dir is None:
        return
    slot = st.container()
    gallery = chosen_gallery(choice)
    records = tile_records(map_dir, choice)
    key = map_key(map_dir)
    left, right = st.columns(2)
    with left:
        query = query_panel(choice, picked, map_dir, gallery)
    with right:
        listen_panel(records, gallery, query, clicked_tile(key))
    shown = pick_layers((map_dir / "landcover.tif").is_file(), (map_dir / "soundscape.tif").is_file(),
                        query is not None,  # in the sidebar: drawn after the panels, it knows the query
                        (map_dir / "soundscape_scores.tif").is_file())
    hover = layers.with_query(records, query.array) if query is not None else records
    deck_layers, fp, legends = build_layers(scene, map_dir, choice, shown, hover, query)
    show_map(slot, deck_layers, fp, shown, hover, legends, query, key, layers.map_caption(fp, run_info(map_dir)))
    st.subheader("Downloads")
    files = product_files(map_dir) + ([heat_file(query)] if query is not None else [])
    download_buttons(files, scene.path.stem)
    about_map(map_dir)


main()
