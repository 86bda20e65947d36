"""The two panels under the map: query by sound, and listen to a tile's nearest recordings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app import sound_query
from app.access import public
from app.pickers import BundleChoice, open_backend
from app.sound_query import AUDIO_LIMITS, AUDIO_TYPES, Gallery
from geo.query import query_calibration
from app.state import MAX_AUDIO_MB, cache_dir
from model.core.errors import GeoaudioError, one_line

UPLOAD, GALLERY, CLASS, TEXT = "a recording you upload", "a gallery recording", "a sound class", "a description"
AUDIO_MIME = {".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".flac": "audio/flac", ".wav": "audio/wav"}


@dataclass(frozen=True)
class Query:
    """A finished query: what was asked (one line), the heatmap (3, rows, cols) and its profile."""

    what: str
    array: np.ndarray
    profile: dict[str, Any]
    key: str
    label: str = "query"  # short name of what was asked, for file names
    cell_names: dict[tuple[int, int], str] | None = None  # (row, col) -> tile name, where not "r<row> c<col>"

    @property
    def similarity(self) -> np.ndarray:
        return self.array[0]

    def cell_name(self, row: int, col: int) -> str:
        """The name of heatmap cell (``row``, ``col``): its tile's (a region's ``"<input> r2 c3"``), or
        ``"r<row> c<col>"``."""
        return (self.cell_names or {}).get((row, col), f"r{row} c{col}")


@st.cache_data(max_entries=16, show_spinner="embedding the recording ...")
def _embed_upload(path: str, bundle_hash: str, backend: str, name: str, data: bytes, _bundle: Any) -> np.ndarray:
    return sound_query.embed_upload(open_backend(path, bundle_hash, backend, _bundle), name, data)


@st.cache_data(max_entries=16, show_spinner=False)
def _heatmap(embeddings: str, stamp: tuple, vector: np.ndarray, distance: str,
             calibration: tuple[tuple[str, Any], ...] | None) -> tuple[np.ndarray, dict[str, Any]]:
    return sound_query.heatmap(Path(embeddings), vector, distance, dict(calibration) if calibration else None)


@st.cache_resource(max_entries=3, show_spinner=False)
def load_gallery(path: str, bundle_hash: str, _bundle: Any) -> Gallery | None:
    """The bundle's gallery (cached per bundle hash); None when it has none."""
    return sound_query.load_gallery(_bundle)


def _keep_valid(key: str, options: list[Any]) -> None:
    """Forget a widget's remembered value when it is not among its options any more (another
    scene, bundle or gallery), so the widget starts again from its first option."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def _audio(path: Path | None) -> None:
    if path is None:
        st.caption("(recording not found on this machine)")
    else:
        st.audio(str(path), format=AUDIO_MIME.get(path.suffix.lower(), "audio/mpeg"))


def _query_vector(choice: BundleChoice, backend: str,
                  gallery: Gallery | None) -> tuple[np.ndarray, str, str] | None:
    """The query vector, a one-line description and a short label for file names, from the chosen
    source; None when not ready."""
    sources = ([UPLOAD] if choice.bundle.has("audio_encoder") else []) + ([GALLERY] if gallery is not None else []) + (
        [CLASS] if "soundscape" in choice.bundle.heads else []) + ([TEXT] if gallery is not None else [])
    if not sources:
        st.caption("This bundle cannot be queried by sound: it has no audio encoder, gallery or soundscape head.")
        return None
    _keep_valid("query_source", sources)
    source = st.radio("Query with", sources, key="query_source", horizontal=True)
    if source == UPLOAD:
        up = st.file_uploader(f"Recording ({', '.join(AUDIO_TYPES)}; {AUDIO_LIMITS})", type=list(AUDIO_TYPES),
                              key="query_upload", max_upload_size=MAX_AUDIO_MB)  # Streamlit refuses more itself
        if up is None:
            return None
        try:
            vector = _embed_upload(str(choice.path), choice.hash, backend, up.name, up.getvalue(), choice.bundle)
        except (GeoaudioError, OSError) as e:
            st.error(public(f"audio rejected: {one_line(e)}"))
            return None
        st.audio(up.getvalue(), format=AUDIO_MIME.get(Path(up.name).suffix.lower(), "audio/wav"))
        return vector, f"your recording {up.name}", Path(up.name).stem
    if source == GALLERY:
        keys = gallery.rows["key"].astype(int).tolist()
        _keep_valid("query_gallery", keys)
        key = st.selectbox("Gallery recording", keys, key="query_gallery",
                           format_func=lambda k: f"{k}: {gallery.title(k)}")
        _audio(gallery.audio_file(key))
        return gallery.vector(key), f"gallery recording {key} ({gallery.title(key)})", f"gallery-{key}"
    if source == TEXT:
        return _text_vector(gallery)
    from geo.query import class_vector

    names = [c["name"] for c in choice.bundle.heads["soundscape"]["classes"]]
    _keep_valid("query_class", names)
    name = st.selectbox("Sound class", names, key="query_class")
    return class_vector(choice.bundle, name), f"the sound class {name}", f"class-{name}"


def _text_vector(gallery: Gallery) -> tuple[np.ndarray, str, str] | None:
    """A description matched against the gallery's titles and descriptions (``geo.text_query``):
    the vector, what was asked and ``text-<words>``; lists the recordings used, with players for those
    on this machine; a warning (one line) and None when none matches."""
    from geo.text_query import clean_text

    text = clean_text(st.text_input("Describe the sound (matched against the gallery's titles and descriptions)",
                                    key="query_text", placeholder="church bells and traffic"))
    if not text:
        return None
    try:
        vector, used = sound_query.text_vector(gallery, text)
    except GeoaudioError as e:
        st.warning(one_line(e))
        return None
    st.markdown(f"**Recordings matching \"{text}\"** (their embeddings, weighted by score, are the query):")
    for match in used:
        st.markdown(f"- {match.title or '(untitled)'} (recording {match.key}, score {match.score:.2f})")
        path = gallery.audio_file(match.key)
        if path is not None:
            _audio(path)
    return vector, f"the description \"{text}\"", "text-" + "-".join(text.split())


def query_panel(choice: BundleChoice, backend: str, map_dir: Path, gallery: Gallery | None,
                embeddings: Path | None = None, cell_names: dict[tuple[int, int], str] | None = None) -> Query | None:
    """Query by sound: pick the source, compute the heatmap over ``embeddings`` (default the map's
    ``embeddings.tif``; a region's embeddings mosaic, whose cells are named by ``cell_names``); None
    until there is a query."""
    st.subheader("Query by sound")
    found = _query_vector(choice, backend, gallery)
    if found is None:
        st.caption("Upload a recording (or pick one) to see where the scene sounds most like it.")
        return None
    vector, what, label = found
    embeddings = embeddings or map_dir / "embeddings.tif"
    try:
        stamp = (embeddings.stat().st_size, embeddings.stat().st_mtime_ns)
        calibration = query_calibration(choice.bundle)
        array, profile = _heatmap(str(embeddings), stamp, np.asarray(vector, np.float32), choice.bundle.distance,
                                  tuple(sorted(calibration.items())) if calibration else None)
    except (GeoaudioError, OSError) as e:
        st.error(public(f"query failed: {one_line(e)}"))
        return None
    query = Query(what, array, profile, sound_query.query_key(vector, map_dir), label, cell_names)
    _answer(query, calibration is not None)
    return query


def _answer(query: Query, calibrated: bool) -> None:
    """Where it sounds like the query: the best cells with their probability of the same place
    (band 3), or "no place in this scene sounds like this" when none reaches ``geo.query.LIKELY``;
    without a calibration, the best cells by rank alone, said to be relative."""
    from geo.query import LIKELY

    array, what, name = query.array, query.what, query.cell_name
    if not calibrated:
        best = sound_query.best_cells(array[0])
        if best:
            st.success(f"Most like {what}: " + ", ".join(f"{name(r, c)} ({s:.2f})" for r, c, s in best))
            st.caption("Ranks within this map only: the bundle has no query calibration to say how likely a match is.")
        return
    probability = array[2]
    answer = sound_query.answer_cells(array)
    if not answer:
        if np.isfinite(probability).any():
            st.warning(f"No place in this scene sounds like {what}: the most likely cell has a "
                       f"{float(np.nanmax(probability)):.0%} probability of being the same place (below {LIKELY:.0%}).")
        return
    cells = ", ".join(f"{name(r, c)} (p {probability[r, c]:.0%})" for r, c, _ in answer)
    likely = int(np.nansum(probability >= LIKELY))
    st.success(f"Most like {what}: {cells}; {likely} cells are more likely than not the same place "
               f"(p >= {LIKELY:.0%}).")


def heat_file(query: Query) -> Path:
    """The query's heatmap as a COG in ``CACHE/queries/`` named after the query
    (:func:`~app.sound_query.heat_name`; written once)."""
    out = cache_dir() / "queries" / sound_query.heat_name(query.label, query.key)
    if not out.is_file():
        sound_query.save_heatmap(query.array, query.profile, out, query.what)
    return out


def _follow_query(query: Query | None, by_id: dict[str, Any]) -> None:
    """Select the most similar tile once per new query (the user may pick another afterwards)."""
    if query is None or st.session_state.get("listen_query") == query.key:
        return
    st.session_state["listen_query"] = query.key
    best = sound_query.best_cells(query.similarity, 1)
    tile = query.cell_name(best[0][0], best[0][1]) if best else None
    if tile in by_id:
        st.session_state["listen_tile"] = tile


def _follow_click(clicked: tuple[str, str | None] | None, by_id: dict[str, Any]) -> None:
    """Listen to the tile clicked on the map: ``clicked`` is (map chart key, tile or None), applied
    once per new click, so the dropdown can still pick another tile while the click stays selected."""
    if clicked is None or st.session_state.get("listen_clicked") == clicked:
        return
    st.session_state["listen_clicked"] = clicked
    if clicked[1] in by_id:
        st.session_state["listen_tile"] = clicked[1]


NO_GALLERY = "No gallery recordings for this map (the bundle has no gallery)."


def listen_panel(records: list[dict[str, Any]], gallery: Gallery | None, query: Query | None,
                 clicked: tuple[str, str | None] | None = None, no_tiles: str = "This map has no tiles with data.",
                 no_gallery: str = NO_GALLERY) -> None:
    """Pick a tile by clicking it on the map (``clicked``: :func:`_follow_click`) or by id; show its
    land cover and top sounds and play its nearest gallery recordings. ``no_tiles`` and
    ``no_gallery`` are the captions shown without tile records or without a gallery."""
    st.subheader("Listen to a tile")
    if not records:
        st.caption(no_tiles)
        return
    ids = [r["tile"] for r in records]
    by_id = {r["tile"]: r for r in records}
    _keep_valid("listen_tile", ids)
    _follow_click(clicked, by_id)
    _follow_query(query, by_id)
    tile = st.selectbox("Tile (row, column; or click a tile on the map)", ids, key="listen_tile",
                        format_func=lambda t: f"{t}: {by_id[t].get('sound_1', '')} {by_id[t].get('score_1', '')}")
    rec = by_id[tile]
    if "landcover" in rec:
        st.markdown(f"**Land cover (majority):** {rec['landcover']}")
    sounds = [f"{rec[f'sound_{j}']} {rec[f'score_{j}']}" for j in range(1, 4) if f"sound_{j}" in rec]
    if sounds:
        st.markdown("**Top sounds:** " + " · ".join(sounds))
    near = [j for j in range(1, 4) if f"near_{j}_key" in rec]
    if not near or gallery is None:
        st.caption(no_gallery)
        return
    for j in near:
        key = rec[f"near_{j}_key"]
        st.markdown(f"{j}. {rec.get(f'near_{j}', '')} (recording {key}, distance {rec[f'near_{j}_distance']})")
        _audio(gallery.audio_file(key))
