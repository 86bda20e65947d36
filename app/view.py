"""Drawing a map on the page, shared by a mapped scene (``app/main.py``) and a mapped region
(:mod:`app.region_view`): the cached layer images, the deck with its scale bar, legends and
captions, and the tile a click selected."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import layers
from app.access import public
from app.panels import Query, load_gallery
from app.pickers import BundleChoice, LayerChoice
from app.sound_query import Gallery
from app.state import sha256_hex
from model.bundle.gallery import collapse_warning
from model.core.errors import GeoaudioError, one_line

HEAT_CAPTION = ("Similarity heatmap of {what}: 1 = the cells that sound most like it, 0 = the least alike "
                "(a ranking within this map).")


@st.cache_data(max_entries=16, show_spinner=False)
def class_image(path: str, stamp: tuple, colors: tuple) -> tuple[str, layers.Footprint]:
    """``app.layers.class_layer_image``, cached per file (``stamp``: its size and mtime) and colours."""
    return layers.class_layer_image(path, colors)


@st.cache_data(max_entries=8, show_spinner=False)
def uncertainty_image(path: str, stamp: tuple) -> tuple[str, layers.Footprint] | None:
    """``app.layers.uncertainty_layer_image``, cached per file (``stamp``: its size and mtime)."""
    return layers.uncertainty_layer_image(path)


def map_key(map_dir: Path) -> str:
    """The map chart's widget key, one per map folder: a click selects a tile of that map only (a
    selection does not carry over to another map's tiles)."""
    return f"map_{sha256_hex(str(map_dir).encode())[:12]}"


def clicked_tile(key: str) -> tuple[str, str | None]:
    """(chart key, the tile clicked on that map or None), read from the chart's selection in
    session state at the start of the run (the chart itself is drawn after the panels)."""
    return key, layers.selected_tile(st.session_state.get(key))


def show_map(slot, deck_layers: list, fp: layers.Footprint, shown: LayerChoice, records: list[dict],
             legends: list[str], query: Query | None, key: str, about: str) -> None:
    """Draw the deck (clicking a tile selects it: chart ``key``), its scale bar, legends and the
    ``about`` line into ``slot``."""
    tip = layers.tooltip(records) if shown.tiles and records else None
    view = layers.view_state(fp)
    deck = layers.make_deck(deck_layers, view, shown.web_basemap, tip)
    with slot:
        st.pydeck_chart(deck, height=layers.MAP_HEIGHT_PX, on_select="rerun", selection_mode="single-object", key=key)
        st.markdown(layers.scale_bar_html(view), unsafe_allow_html=True)
        for legend in legends:
            st.markdown(legend, unsafe_allow_html=True)
        if query is not None and shown.heatmap:
            st.caption(HEAT_CAPTION.format(what=query.what))
        if about:
            st.caption(about)


def chosen_gallery(choice: BundleChoice) -> Gallery | None:
    """The chosen bundle's gallery (None without one, or when it is unusable: one warning line),
    with one warning line each when some of its recordings are not played or it is collapsed."""
    try:
        gallery = load_gallery(str(choice.path), choice.hash, choice.bundle)
    except (GeoaudioError, OSError) as e:
        st.warning(public(f"gallery not usable: {one_line(e)}", {choice.path: "the bundle"}))
        return None
    if gallery is not None and gallery.refused:
        st.warning(f"{gallery.refused} recordings of this bundle's gallery name files outside its data folder: "
                   "they are not played.")
    collapsed = collapse_warning(gallery.embeddings) if gallery is not None else None
    if collapsed:
        st.warning(collapsed)
    return gallery
