"""The sidebar choices: scene, bundle, backend and layers; each bad choice is one ``st.error`` line.

Loaded bundles, backends and layer images are cached by Streamlit (``st.cache_resource`` /
``st.cache_data``) under keys that change when the files change (size and modification time),
so a rerun after any widget change costs almost nothing.

Choices stay when their widgets are not drawn for a while (a scene, bundle or backend that is not
mapped shows no layers and no query): the layer widgets keep their values (``persist_state``), and
:func:`keep_values` keeps those of the query panel's widgets; the keys of these widgets do not
depend on the scene, bundle or backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from app import scenes
from app.access import listed_bundles, public
from app.catalog_scene import CatalogScene, catalogue_scene, is_catalogue_path
from app.scenes import Scene
from app.state import MAX_UPLOAD_MB, AppOptions, bundles_dir, landsat_sample
from model.core.errors import GeoaudioError, one_line
from model.bundle.files import REQUIRED_FILES

DEMO_BUNDLE = "Demo bundle"
FOLDER_BUNDLE = "Bundle folder"


def file_stamp(*paths: Path) -> tuple[tuple[int, int], ...]:
    """(size, mtime_ns) of each path, (0, 0) when missing: a cache key that changes with the files."""
    out = []
    for p in paths:
        try:
            st_ = p.stat()
            out.append((st_.st_size, st_.st_mtime_ns))
        except OSError:
            out.append((0, 0))
    return tuple(out)


@st.cache_resource(max_entries=3, show_spinner="loading the bundle ...")
def _load_bundle(path: str, stamp: tuple) -> Any:
    """The bundle at ``path``, loaded once per (path, files' size and mtime): the one load of a
    chosen bundle; its content hash is computed once on the returned object."""
    from model.bundle import load

    return load(path)


@st.cache_data(max_entries=8, show_spinner=False)
def _backends(path: str, bundle_hash: str, _bundle: Any) -> dict[str, str]:
    """Backend name -> "ok" or why not, for the loaded ``_bundle`` (cached per path and hash;
    the leading underscore keeps the Bundle itself out of Streamlit's cache key)."""
    from export.runtime import available_backends

    return available_backends(_bundle)


@st.cache_resource(max_entries=4, show_spinner="opening the backend ...")
def open_backend(path: str, bundle_hash: str, name: str, _bundle: Any) -> Any:
    """The backend ``name`` for the loaded ``_bundle`` of ``path`` (cached per path, hash and name)."""
    from export.runtime import open_backend as open_

    return open_(_bundle, name=name)


@dataclass(frozen=True)
class BundleChoice:
    """The chosen bundle: folder, loaded bundle, content hash."""

    path: Path
    bundle: Any
    hash: str


def pick_scene(options: AppOptions, demo: Any) -> Scene | CatalogScene | None:
    """Scene radio (demo, Landsat sample, upload, server path) and its input; None until usable. A
    server path naming a folder or a ``catalog.json`` is a mapped region (:mod:`app.catalog_scene`)."""
    sb = st.sidebar
    sb.header("Scene")
    choices = scenes.sources(demo.scene if demo else None, landsat_sample(), options.allow_server_paths)
    choice = sb.radio("Scene", choices, key="scene_source", label_visibility="collapsed")
    if choice == scenes.DEMO:
        return scenes.file_scene("the demo scene", demo.scene)
    if choice == scenes.LANDSAT:
        return scenes.file_scene("the Landsat sample", landsat_sample())
    if choice == scenes.UPLOAD:
        return _uploaded_scene()
    text = sb.text_input("GeoTIFF path on the server", key="scene_path",
                         help="Or a folder written by python -m geo.map (or its catalog.json): the mapped region is "
                              "shown as it is, from its catalogue and mosaics.")
    if not text.strip():
        return None
    try:
        path = Path(text.strip()).expanduser()
        return catalogue_scene(path) if is_catalogue_path(path) else scenes.server_scene(text)
    except (GeoaudioError, OSError) as e:
        st.error(public(one_line(e)))
        return None


def _uploaded_scene() -> Scene | None:
    up = st.sidebar.file_uploader(f"GeoTIFF, RGB, georeferenced (at most {MAX_UPLOAD_MB} MB)", type=["tif", "tiff"],
                                  key="scene_upload", max_upload_size=MAX_UPLOAD_MB)  # Streamlit refuses more itself
    if up is None:
        st.sidebar.caption("Upload a GeoTIFF to map it.")
        return None
    done = st.session_state.setdefault("uploads", {})
    if up.file_id not in done:
        try:
            done[up.file_id] = scenes.save_upload(up.name, up.getvalue())
        except (GeoaudioError, OSError) as e:
            done[up.file_id] = f"upload rejected: {one_line(e)}"
    result = done[up.file_id]
    if isinstance(result, str):
        st.error(public(result))
        return None
    return result


def offered_bundles(demo: Any) -> dict[str, Path]:
    """The bundles offered by name: the demo bundle, then each bundle folder of the bundles folder
    (``app.access.listed_bundles``; a folder named like a fixed choice is left out)."""
    listed = {name: path for name, path in listed_bundles(bundles_dir()).items()
              if name not in (DEMO_BUNDLE, FOLDER_BUNDLE)}
    return ({DEMO_BUNDLE: demo.bundle} if demo else {}) | listed


def pick_bundle(options: AppOptions, demo: Any) -> BundleChoice | None:
    """Bundle radio: the offered bundles by name and, with ``--allow-server-paths`` only, a folder
    path (``app.access``); validated with ``model.bundle.load``; None until usable."""
    sb = st.sidebar
    sb.header("Model")
    offered = offered_bundles(demo)
    kinds = list(offered) + ([FOLDER_BUNDLE] if options.allow_server_paths else [])
    if not kinds:
        sb.caption("No bundle is offered: build the demo (python -m app.demo) or add bundle folders to the "
                   "bundles folder (GEOAUDIO_BUNDLES).")
        return None
    kind = sb.radio("Bundle", kinds, key="bundle_source", horizontal=True)
    path = offered.get(kind) or _typed_bundle_folder()
    if path is None:
        return None
    try:
        bundle = _load_bundle(str(path), file_stamp(*(path / name for name in REQUIRED_FILES)))
    except (GeoaudioError, OSError) as e:
        st.error(public(f"bundle rejected: {one_line(e)}", {path: kind}))
        return None
    return BundleChoice(path, bundle, bundle.content_hash())


def _typed_bundle_folder() -> Path | None:
    """The bundle folder typed in the sidebar (offered only with ``--allow-server-paths``)."""
    text = st.sidebar.text_input("Bundle folder", key="bundle_path",
                                 help="A folder with bundle.json and weights.safetensors, e.g. a run's bundle/ or an "
                                      "imported SoundingEarth checkpoint (python -m model.import_soundingearth).")
    if not text.strip():
        st.sidebar.caption("Enter a bundle folder on this machine.")
        return None
    return Path(text.strip()).expanduser()


def pick_backend(choice: BundleChoice) -> str:
    """Backend select box: auto and every backend that works for this bundle here."""
    found = _backends(str(choice.path), choice.hash, choice.bundle)
    names = ["auto"] + [n for n, status in found.items() if status == "ok"]
    backend = st.sidebar.selectbox("Backend", names, key="backend",
                                   help="auto picks the fastest that works: TensorRT, ONNX INT8, ONNX, then PyTorch.")
    unusable = {n: s for n, s in found.items() if s != "ok"}
    if unusable:
        with st.sidebar.expander("Why not the other backends?"):
            for name, why in unusable.items():
                st.caption(public(f"**{name}**: {why}", {choice.path: "the bundle"}))
    return backend


def concrete_backend(choice: BundleChoice, name: str) -> str:
    """The backend ``name`` stands for: itself, or for ``auto`` the one ``export.runtime`` opens
    (``torch``, ``onnx-int8`` ...; opened once and cached, as queries use it too). Maps are keyed
    by this name, so a map made with ``auto`` is found again when its backend is picked by name.
    BackendError (one line) when it cannot be opened."""
    if name != "auto":
        return name
    return str(open_backend(str(choice.path), choice.hash, name, choice.bundle).name)


def keep_values(keys: tuple[str, ...]) -> None:
    """Keep the values of the widgets ``keys`` through runs that do not draw them (Streamlit drops
    a widget's value then): each value is written back as session state before any widget is
    drawn, the documented way to keep it. Call once per run, first."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


@dataclass(frozen=True)
class LayerChoice:
    """Which layers are on, and their opacities (0..1)."""

    imagery: bool
    landcover: bool
    landcover_opacity: float
    soundscape: bool
    soundscape_opacity: float
    tiles: bool
    heatmap: bool
    heatmap_opacity: float
    web_basemap: bool
    uncertainty: bool = False
    uncertainty_opacity: float = 0.6


QUIET_OPACITY = 0.2  # the class layers' default opacity while a similarity heatmap is shown


def pick_layers(has_landcover: bool, has_soundscape: bool, query_active: bool = False,
                has_uncertainty: bool = False, has_imagery: bool = True) -> LayerChoice:
    """Layer toggles and opacity sliders (those of missing products are not shown). While a query's
    heatmap is shown (``query_active`` and its toggle on) the class layers' sliders default to
    :data:`QUIET_OPACITY`, so the imagery shows through; a slider the user has moved keeps its value."""
    sb = st.sidebar
    sb.header("Layers")
    imagery = has_imagery and sb.checkbox("Imagery", value=True, key="layer_imagery", persist_state="page")
    quiet = QUIET_OPACITY if query_active and st.session_state.get("layer_heatmap", True) else None
    landcover, lc_opacity = _toggle("Land cover", "landcover", has_landcover, False, 0.5, quiet)
    soundscape, ss_opacity = _toggle("Soundscape (top sound per tile)", "soundscape", has_soundscape, True, 0.45, quiet)
    uncertainty, unc_opacity = _toggle("Soundscape uncertainty (0 certain, 1 all classes alike)", "uncertainty",
                                       has_uncertainty, False, 0.6, quiet)
    tiles = sb.checkbox("Tile outlines and tooltips", value=True, key="layer_tiles", persist_state="page")
    heatmap, heat_opacity = _toggle("Similarity heatmap (after a sound query)", "heatmap", True, True, 0.6)
    web = sb.checkbox("Web basemap (needs internet)", value=False, key="layer_web", persist_state="page",
                      help="Off: nothing is fetched; the imagery is the base layer.")
    return LayerChoice(imagery, landcover, lc_opacity, soundscape, ss_opacity, tiles, heatmap, heat_opacity, web,
                       uncertainty, unc_opacity)


def _moved(key: str) -> None:
    """on_change of an opacity slider: the user set it, so its default no longer follows the query."""
    st.session_state[f"{key}_moved"] = True


def _default_opacity(key: str, opacity: float) -> None:
    """Set the slider ``key`` to its current default ``opacity`` (0..1) unless the user has moved it
    (:func:`_moved`); called before the slider is drawn, as Streamlit allows. The slider then takes
    its value from session state alone (``value=None``: no default to conflict with it)."""
    if key not in st.session_state or (not st.session_state.get(f"{key}_moved") and st.session_state[key] != opacity):
        st.session_state[key] = opacity


def _toggle(label: str, key: str, present: bool, default: bool, opacity: float,
            quiet: float | None = None) -> tuple[bool, float]:
    """A layer's checkbox and opacity slider; the slider's default is ``quiet`` when given, else
    ``opacity`` (:func:`_default_opacity`)."""
    if not present:
        return False, opacity
    on = st.sidebar.checkbox(label, value=default, key=f"layer_{key}", persist_state="page")
    _default_opacity(f"opacity_{key}", opacity if quiet is None else quiet)
    value = st.sidebar.slider(f"{label.split(' (')[0]} opacity", 0.0, 1.0, None, 0.05, key=f"opacity_{key}",
                              disabled=not on, persist_state="page", on_change=_moved, args=(f"opacity_{key}",))
    return on, float(value)
