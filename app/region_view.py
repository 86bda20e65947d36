"""A mapped region on the page: a ``geo.map`` output folder (or its ``catalog.json``) named as the
scene's server path (:mod:`app.catalog_scene`).

Nothing is mapped: the land-cover, soundscape and uncertainty layers are the region's mosaics,
read decimated (``app.layers``: at most ``MAX_PREVIEW_PX`` a side), one bitmap per mosaic (per CRS
when the inputs differ in CRS), with legends from the mosaics' class names and colour tables; each
input's footprint is outlined and named; the tiles of the inputs' ``tiles.gpkg`` give the hover
values and the listening panel (up to ``MAX_REGION_TILES``); the sound query runs over the
embeddings mosaic when the selected bundle is the one the region was mapped with
(``catalog_scene.query_refusal`` says why not otherwise, in one line). A folder with mapped runs
but no ``catalog.json`` gets a button that builds it (``geo.catalog.publish_catalogue``, as
``python -m geo.catalog`` does); a bad catalogue is one error line.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st
from rasterio.errors import RasterioError

from app import layers
from app.access import public
from app.catalog_scene import (
    CATALOG_FILE,
    MAX_REGION_TILES,
    CatalogScene,
    CatalogueError,
    Region,
    crs_labels,
    footprint_records,
    mosaic_classes,
    query_refusal,
    read_region,
    region_bounds,
    region_records,
)
from app.downloads import download_buttons
from app.panels import NO_GALLERY, Query, heat_file, listen_panel, query_panel
from app.pickers import BundleChoice, LayerChoice, file_stamp, pick_layers
from app.sound_query import Gallery
from app.view import (
    chosen_gallery,
    class_image,
    clicked_tile,
    map_key,
    show_map,
    uncertainty_image,
)
from model.core.errors import GeoaudioError, one_line

COLLECTION = Path("mosaic") / "collection.json"
UNREADABLE = (GeoaudioError, OSError, ValueError, RuntimeError, RasterioError)  # files GDAL or OGR cannot read
OTHER_BUNDLE = "No gallery recordings: they come from the gallery of the bundle the region was mapped with."


@st.cache_data(max_entries=4, show_spinner="reading the catalogue ...")
def _region(catalog: str, stamp: tuple) -> Region:
    return read_region(Path(catalog))


@st.cache_data(max_entries=4, show_spinner="reading the tiles ...")
def _records(catalog: str, stamp: tuple, _region: Region) -> tuple[list[dict], int]:
    return region_records(_region)


def _stamp(scene: CatalogScene) -> tuple:
    """The cache key of a region's catalogue: size and mtime of catalog.json and the mosaic collection
    (``geo.catalog`` rewrites both whenever it runs)."""
    return file_stamp(scene.catalog, scene.root / COLLECTION)


def build_catalogue(scene: CatalogScene) -> bool:
    """For a folder without ``catalog.json``: one error line when nothing is mapped in it, else a box
    offering to build it (button); builds it when clicked and says so. Whether it now exists."""
    import pystac

    from geo.catalog import publish_catalogue
    from geo.mosaic import mapped_runs

    runs = mapped_runs(scene.root, lambda message: None)
    if not runs:
        st.error(public(f"{scene.root}: no {CATALOG_FILE} and nothing mapped here (no folder with a run.json of "
                        f"python -m geo.map)"))
        return False
    box = st.empty()
    with box.container():
        st.info(f"{scene.root.name} holds {len(runs)} mapped inputs but no {CATALOG_FILE}: build it to show them as "
                f"one region (as python -m geo.catalog does: it writes {CATALOG_FILE}, stac/ and mosaic/ into that "
                f"folder; nothing is mapped again).")
        clicked = st.button("Build the catalogue", type="primary", key="catalogue_button")
    if not clicked:
        return False
    try:
        with st.spinner("building the catalogue and mosaics ..."):
            result = publish_catalogue(scene.root)
    except UNREADABLE + (pystac.STACError, pystac.STACValidationError) as e:
        st.error(public(f"cannot build the catalogue of {scene.root.name}: {one_line(e)}"))
        return False
    box.empty()
    st.success(f"Built {CATALOG_FILE} of {scene.root.name} (python -m geo.catalog): {len(result['items'])} items, "
               f"{len(result['mosaics'])} mosaics.")
    for problem in result["problems"]:
        st.warning(public(problem))
    return result["catalog"] is not None


def open_region(scene: CatalogScene) -> Region | None:
    """The region of ``scene`` (building its catalogue first when asked: :func:`build_catalogue`);
    None, with one error line for a bad catalogue, until it can be shown."""
    if not scene.catalog.is_file() and not build_catalogue(scene):
        return None
    try:
        return _region(str(scene.catalog), _stamp(scene))
    except CatalogueError as e:
        st.error(public(one_line(e)))
        return None


def _class_layers(region: Region, shown: LayerChoice) -> tuple[list, list[str]]:
    """Bitmaps of the land-cover and soundscape mosaics (one per VRT; ids are the VRTs' stems) and
    the uncertainty band of the scores mosaics, with their legends."""
    out, legends = [], []
    for product, on, opacity, title in (("landcover", shown.landcover, shown.landcover_opacity, "Land cover"),
                                        ("soundscape", shown.soundscape, shown.soundscape_opacity, "Soundscape")):
        paths = region.mosaics.get(product, ())
        if on and paths:
            classes = mosaic_classes(paths[0])  # geo.mosaic keeps one layer's class names and colours alike
            colors = tuple(tuple(int(v) for v in c["color"]) for c in classes)
            for path in paths:
                image, fp = class_image(str(path), file_stamp(path), colors)
                out.append(layers.bitmap_layer(path.stem, image, fp, opacity))
            legends.append(layers.legend_html(title, classes))
    scores = region.mosaics.get("soundscape_scores", ()) if shown.uncertainty else ()
    for path in scores:
        found = uncertainty_image(str(path), file_stamp(path))
        if found is not None:
            layer_id = path.stem.replace("soundscape_scores", "uncertainty")
            out.append(layers.bitmap_layer(layer_id, found[0], found[1], shown.uncertainty_opacity))
    if any(layer.id.startswith("uncertainty") for layer in out):
        legends.append(layers.uncertainty_legend_html())
    return out, legends


def region_layers(region: Region, shown: LayerChoice, records: list[dict],
                  query: Query | None) -> tuple[list, list[str]]:
    """The deck's layers (bottom to top: class mosaics, uncertainty, heatmap, input footprints and
    names, tiles, best cells) and the legends to show."""
    out, legends = _class_layers(region, shown)
    if query is not None and shown.heatmap:
        image, heat_fp = layers.heat_layer_image(query.similarity, query.profile)
        out.append(layers.bitmap_layer("heatmap", image, heat_fp, shown.heatmap_opacity))
        legends.append(layers.heat_legend_html())
    out += layers.footprint_layers(footprint_records(region))
    if shown.tiles and records:
        out.append(layers.tiles_layer(records))
    if query is not None and shown.heatmap:
        out += layers.best_cell_layers(layers.marked_cells(query.array), query.profile)
    return out, legends


def view_footprint(region: Region) -> layers.Footprint | None:
    """What the map centres on: the items' bboxes together, else the first mosaic's footprint."""
    import rasterio

    bounds = region_bounds(region)
    if bounds is not None:
        return layers.bbox_footprint(*bounds)
    for paths in region.mosaics.values():
        with rasterio.open(paths[0]) as ds:
            return layers.footprint(ds.transform, ds.width, ds.height, ds.crs)
    return None


def _query(region: Region, refusal: str, choice: BundleChoice | None, backend: str, gallery: Gallery | None,
           records: list[dict]) -> Query | None:
    """The query panel over the embeddings mosaic, its cells named by the tiles on them (where inputs
    overlap, the tile of the input later by name, which geo.mosaic draws on top), or its subheader
    and the one line saying why not."""
    if refusal or choice is None:
        st.subheader("Query by sound")
        st.warning(public(refusal))
        return None
    names = {(rec["row"], rec["col"]): rec["tile"] for rec in records if rec["row"] >= 0}
    return query_panel(choice, backend, region.root, gallery, region.mosaics["embeddings"][0], names)


def _tiles(scene: CatalogScene, region: Region) -> tuple[list[dict], int]:
    """The region's tile records and tile count (:func:`app.catalog_scene.region_records`, cached);
    none, with one warning line, when an input's tiles cannot be read."""
    try:
        return _records(str(scene.catalog), _stamp(scene), region)
    except UNREADABLE as e:
        st.warning(public(f"tiles not shown: {one_line(e)}"))
        return [], 0


def _no_tiles(count: int) -> str:
    """The listening panel's caption for a region without tile records: none, or too many to draw."""
    if not count:
        return "This region has no tiles with data."
    return (f"{count:,} tiles in this region, more than the app draws ({MAX_REGION_TILES:,}): no tile outlines, "
            "hover values or listening.")


def show_region(scene: CatalogScene, choice: BundleChoice | None, backend: str) -> None:
    """The page of a mapped region (module doc): a caption on how it was mapped, the query and listening
    panels, the map with its legends and "About this region" line, and the heatmap's download."""
    region = open_region(scene)
    if region is None:
        return
    fp = view_footprint(region)
    if fp is None:
        st.error(public(f"{scene.catalog}: no item has a footprint and there is no mosaic: nothing to place on a map"))
        return
    hashes = region.bundle_hashes
    label = scene.label[:1].upper() + scene.label[1:]
    st.caption(f"{label}: {len(region.items)} inputs mapped with bundle {', '.join(hashes)}, shown as mapped: "
               "nothing is mapped again, whatever bundle is selected; a sound query needs the bundle it was mapped "
               "with.")
    if not region.mosaics:
        st.warning(f"The catalogue of {scene.root.name} has no mosaics: rebuild it with python -m geo.catalog.")
    slot = st.container()
    matches = choice is not None and hashes == [choice.hash]
    gallery = chosen_gallery(choice) if matches else None
    records, count = _tiles(scene, region)
    key = map_key(region.root)
    left, right = st.columns(2)
    with left:
        refusal = query_refusal(region, choice.hash if choice else None)
        query = _query(region, refusal, choice, backend, gallery, records)
    with right:
        listen_panel(records, gallery, query, clicked_tile(key), _no_tiles(count),
                     NO_GALLERY if matches else OTHER_BUNDLE)
    has = {product: bool(paths) for product, paths in region.mosaics.items()}
    shown = pick_layers(has.get("landcover", False), has.get("soundscape", False), query is not None,
                        has.get("soundscape_scores", False), has_imagery=False)
    hover = layers.with_query(records, query.array) if query is not None else records
    try:
        deck_layers, legends = region_layers(region, shown, hover, query)
        crs = crs_labels(next(iter(region.mosaics.values()))) if region.mosaics else []
    except UNREADABLE as e:  # a mosaic whose inputs were moved or deleted since the catalogue was built
        st.error(public(f"cannot draw {scene.root.name}: {one_line(e)}"))
        return
    about = layers.region_caption(fp, [item.stem for item in region.items], crs, hashes)
    show_map(slot, deck_layers, fp, shown, hover, legends, query, key, about)
    if query is not None:
        st.subheader("Downloads")
        download_buttons([heat_file(query)], region.root.name)
