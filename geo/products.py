"""The products of mapping one raster, written incrementally as batches of tiles arrive.

Raster products (cloud-optimised GeoTIFFs in the input's CRS, see :mod:`geo.cog`):

- ``soundscape.tif``: uint8 class id (argmax of the soundscape scores) per tile cell, colour
  table, class names (:mod:`geo.class_names`), nodata 255 — on the cell grid
  ``grid.cell_transform`` (an exact sub-grid of the input).
- ``soundscape_scores.tif``: one float32 band per sound class, the probability
  ``softmax_k(-d(z, prototype_k) / temperature)`` in 0..1, then one band ``uncertainty``, the
  normalised entropy of those K scores in 0..1 (:mod:`geo.uncertainty`); nodata NaN; band
  descriptions are the class names and ``uncertainty``.
- ``embeddings.tif``: one float32 band per embedding dimension (``emb_000`` ...), nodata NaN;
  tags ``geoaudio_bundle_hash``, ``geoaudio_distance`` say which model and distance they need.
- ``landcover.tif``: uint8 class id per pixel of the input's grid (or of an integer multiple of
  it) within the input's extent (:mod:`geo.landcover_grid`), resampled from the blended model-pixel
  land cover (:mod:`geo.blend`); colour table, class names (:mod:`geo.class_names`), nodata 255.

Vector products (see :mod:`geo.vectors`): ``tiles.gpkg`` and ``landcover.gpkg``.

Tiles without any valid pixel are not inferred; their cells are nodata everywhere. Products of a
head the bundle lacks are not written.

Given a run ``key``, the set checkpoints itself every ``checkpoint_s`` seconds and resumes from
the last checkpoint of an interrupted run with the same key (see :mod:`geo.journal`): it then
needs the tiles from :attr:`ProductSet.start_tile` on, rewrites nothing that was final and
repeats no tile record. :meth:`ProductSet.finish` is a journaled phase of its own: a run
interrupted while making the COGs and GeoPackages needs no tile again (``start_tile`` is the
grid's length) and makes only the products not made yet.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from affine import Affine

from geo.blend import NODATA, finished_rows, make_mosaic, replay_start, trim_strips
from geo.class_names import class_name_tags
from geo.cog import StagedRaster, cog_from_staging, staging_path
from geo.errors import RasterError
from geo.grid import TileGrid
from geo.journal import FINISHING, TILING, Checkpoint, kill_point, read_checkpoint, write_checkpoint
from geo.landcover_grid import output_gsd, output_shape, output_transform, regrid
from geo.pipeline import Batch
from geo.uncertainty import UNCERTAINTY, normalised_entropy
from geo.vectors import landcover_polygons, tiles_frame, write_gpkg
from model.core.atomic import atomic_path

CHECKPOINT_S = 30.0  # seconds between checkpoints of a run (geo.journal)
TOP_K = 3  # sound classes per tile in tiles.gpkg
NEAREST_K = 3  # gallery recordings per tile in tiles.gpkg

SOUNDSCAPE, SCORES, EMBEDDINGS, LANDCOVER = "soundscape.tif", "soundscape_scores.tif", "embeddings.tif", "landcover.tif"
TILES_GPKG, LANDCOVER_GPKG = "tiles.gpkg", "landcover.gpkg"
LANDCOVER_ON_GRID = "landcover.on_grid.tif"  # staging name of land cover resampled onto the input's grid
RESAMPLING = {EMBEDDINGS: "average", SCORES: "average", SOUNDSCAPE: "nearest", LANDCOVER: "nearest"}  # overviews

# A gallery lookup: embeddings (n, D) -> columns {"near_1_key": [...], "near_1_title": [...], ...}
GalleryLookup = Callable[[np.ndarray], dict[str, list[Any]]]


def product_names(has_soundscape: bool, has_landcover: bool) -> list[str]:
    """File names a mapping run writes, given the bundle's heads."""
    names = [EMBEDDINGS, TILES_GPKG]
    if has_soundscape:
        names += [SOUNDSCAPE, SCORES]
    if has_landcover:
        names += [LANDCOVER, LANDCOVER_GPKG]
    return names


def class_colors(classes: Sequence[dict[str, Any]]) -> dict[int, tuple[int, int, int]]:
    """Colour table ``{class id: (r, g, b)}`` from a head's class list."""
    return {i: tuple(int(v) for v in c["color"][:3]) for i, c in enumerate(classes)}


def landcover_transform(grid: TileGrid) -> Affine:
    """Affine of the land-cover raster: ``cell_transform @ scale(1 / stride)`` (``stride`` x
    ``stride`` pixels per cell; equals ``grid.pixel_transform`` when stride == tile_size)."""
    if grid.stride == grid.tile_size:
        return grid.pixel_transform
    return grid.cell_transform @ Affine.scale(1.0 / grid.stride)


class ProductSet:
    """All products of one raster, staged in ``folder`` (the run's ``.partial/``).

    Call :meth:`add` with every :class:`geo.pipeline.Batch` from tile :attr:`start_tile` on, in
    row-major order (from one thread), then :meth:`finish` (makes the COGs and GeoPackages in
    ``folder``, keeping the staging files: the caller deletes ``folder`` once the products are
    published), :meth:`close` (interrupted: keep the staging files to resume) or :meth:`discard`.
    With a ``key`` (what is mapped, with what: see :mod:`geo.journal`) the set checkpoints every
    ``checkpoint_s`` seconds and resumes a matching interrupted run; without a matching one it
    empties ``folder`` first (geo.map's ``.partial/``, which nothing else uses).
    """

    def __init__(self, folder: Path, grid: TileGrid, crs: Any, embedding_dim: int,
                 sound_classes: Sequence[dict[str, Any]] | None, landcover_classes: Sequence[dict[str, Any]] | None,
                 tags: dict[str, str], min_area_m2: float, gallery: GalleryLookup | None = None,
                 key: dict[str, Any] | None = None, checkpoint_s: float = CHECKPOINT_S) -> None:
        self.folder, self.grid, self.crs, self.tags = Path(folder), grid, crs, tags
        self.sound_classes, self.landcover_classes = sound_classes or [], landcover_classes or []
        self.min_area_m2, self.gallery = min_area_m2, gallery
        self.embedding_dim, self.key, self.checkpoint_s = embedding_dim, key, checkpoint_s
        found = read_checkpoint(self.folder, key) if key is not None else None
        if found is not None:
            try:
                self._open(found)
                return
            except RasterError:  # staging files that cannot be reused: start over
                pass
        if key is not None:
            self._clear_folder()
        self._open(None)

    def _open(self, found: Checkpoint | None) -> None:
        """Create (or, resuming ``found``, reopen) the staging rasters and the resume state."""
        self.checkpoint = found or Checkpoint(self.key or {})
        self.resumed_rows = self.checkpoint.rows_done  # cell rows final on disk when this run started
        self.rasters: list[StagedRaster] = []
        self.records: list[pd.DataFrame] = []
        self.last_checkpoint = time.monotonic()
        resume = found is not None
        self.embeddings = self.classes = self.scores = self.landcover = None
        if self.checkpoint.phase != TILING:  # tiling was finished: nothing to open, only products to make
            self._check_makeable()
            return
        self.embeddings = self._cell_raster(EMBEDDINGS, "float32",
                                            [f"emb_{i:03d}" for i in range(self.embedding_dim)], resume=resume)
        if self.sound_classes:
            self.classes = self._cell_raster(SOUNDSCAPE, "uint8", ["soundscape_class"],
                                             class_colors(self.sound_classes), resume, class_name_tags(self.sound_classes))
            self.scores = self._cell_raster(SCORES, "float32", [c["name"] for c in self.sound_classes] + [UNCERTAINTY],
                                            resume=resume)
        if self.landcover_classes:
            self.landcover = self._landcover_raster(resume)

    @property
    def names(self) -> list[str]:
        """The products this set makes, in the order :meth:`finish` makes them (landcover.gpkg,
        traced from landcover.tif, comes after it)."""
        return product_names(bool(self.sound_classes), bool(self.landcover_classes))

    def _check_makeable(self) -> None:
        """After tiling: every raster product not made yet still has its staging file (else
        RasterError, and the run starts over)."""
        for name in self.names:
            path = self.folder / name
            made = name in self.checkpoint.made and path.is_file()
            if name in RESAMPLING and not made and not staging_path(path).is_file():
                raise RasterError(f"{staging_path(path)}: staging file missing")

    def _clear_folder(self) -> None:
        """Close anything open and empty the staging folder."""
        for raster in getattr(self, "rasters", []):
            raster.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def start_tile(self) -> int:
        """Row-major index of the first tile :meth:`add` needs (0 unless resuming; the grid's
        length when tiling was finished)."""
        if not self.needs_tiles:
            return len(self.grid)
        if self.resumed_rows == 0:
            return 0
        return replay_start(self.resumed_rows, self.grid.tile_size, self.grid.stride) * self.grid.cell_shape[1]

    @property
    def needs_tiles(self) -> bool:
        """Whether tiles are still to be mapped (False when resuming after tiling was finished)."""
        return self.checkpoint.phase == TILING

    @property
    def tiles_with_data(self) -> int:
        """Tiles with valid pixels recorded so far, including those of a resumed run."""
        return self.checkpoint.tiles_with_data + sum(len(r) for r in self.records)

    def _cell_raster(self, name: str, dtype: str, descriptions: list[str],
                     colors: dict[int, tuple[int, int, int]] | None = None, resume: bool = False,
                     band_tags: dict[str, str] | None = None) -> StagedRaster:
        """A staged raster on the cell grid (nodata 255 for uint8 classes, NaN for floats)."""
        rows, cols = self.grid.cell_shape
        raster = StagedRaster(self.folder / name, width=cols, height=rows, count=len(descriptions), dtype=dtype,
                              transform=self.grid.cell_transform, crs=self.crs,
                              nodata=NODATA if dtype == "uint8" else math.nan, descriptions=descriptions,
                              colors=colors, tags=self.tags, band_tags=band_tags, resume=resume)
        self.rasters.append(raster)
        return raster

    def _landcover_raster(self, resume: bool) -> StagedRaster:
        """The staged land-cover raster (``stride`` pixels per cell side) and its mosaicker, which
        starts at the replay row when resuming (its strips above the final rows are dropped)."""
        g = self.grid
        rows, cols = (n * g.stride for n in g.cell_shape)
        start = replay_start(self.resumed_rows, g.tile_size, g.stride) if self.resumed_rows else 0
        self.mosaic = make_mosaic(rows, cols, g.tile_size, g.stride, len(self.landcover_classes), start)
        self.landcover_final = finished_rows(self.resumed_rows, g.tile_size, g.stride)
        raster = StagedRaster(self.folder / LANDCOVER, width=cols, height=rows, count=1, dtype="uint8",
                              transform=landcover_transform(g), crs=self.crs, nodata=NODATA,
                              descriptions=["landcover_class"], colors=class_colors(self.landcover_classes),
                              tags=self.tags, band_tags=class_name_tags(self.landcover_classes), resume=resume)
        self.rasters.append(raster)
        return raster

    def add(self, batch: Batch) -> None:
        """Write one batch of consecutive tiles into every product. Tiles of cell rows already final
        (replayed after a resume) only feed the land-cover blending."""
        new = batch
        if batch.tiles[0].row < self.resumed_rows:
            new = batch.select(np.array([t.row >= self.resumed_rows for t in batch.tiles]))
        if new.tiles:
            self._write_cells(new)
            self.records.append(self._tile_records(new))
        if self.landcover is not None:
            self._write_landcover(batch)
        self._maybe_checkpoint(batch.tiles[-1].row)

    def _maybe_checkpoint(self, row: int) -> None:
        """Checkpoint when ``checkpoint_s`` have passed and cell row ``row`` has been reached."""
        due = time.monotonic() - self.last_checkpoint >= self.checkpoint_s
        if self.key is not None and due and row > self.checkpoint.rows_done:
            self.save_checkpoint(row)

    def save_checkpoint(self, rows_done: int) -> None:
        """Make cell rows ``< rows_done`` resumable (order in :mod:`geo.journal`): flush the rasters,
        save those rows' tile records as one Parquet part, then replace the journal."""
        for raster in self.rasters:
            raster.flush()
        self._save(rows_done, TILING)

    def _save(self, rows_done: int, phase: str) -> None:
        """Save the tile records of cell rows ``< rows_done`` as one Parquet part, then replace the
        journal (phase ``phase``); the rasters must already be on disk."""
        frames = [f for f in self.records if len(f)]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"row": []})
        done = table["row"].to_numpy() < rows_done
        parts = list(self.checkpoint.parts)
        if done.any():
            name = f"tiles_{len(parts):05d}.parquet"
            with atomic_path(self.folder / name) as tmp:
                table[done].to_parquet(tmp, index=False)
            parts.append(name)
        self.checkpoint = Checkpoint(self.key or {}, rows_done, parts,
                                     self.checkpoint.tiles_with_data + int(done.sum()), phase)
        write_checkpoint(self.folder, self.checkpoint)
        self.records = [table[~done].reset_index(drop=True)] if (~done).any() else []
        self.last_checkpoint = time.monotonic()

    def _cell_values(self, batch: Batch, values: np.ndarray, fill: float, dtype: str) -> np.ndarray:
        """(n, bands) array over all tiles of the batch, ``fill`` for tiles without data."""
        out = np.full((len(batch.tiles), values.shape[1]), fill, dtype)
        out[batch.has_data] = values
        return out

    def _write_cells(self, batch: Batch) -> None:
        arrays = [(self.embeddings, self._cell_values(batch, batch.embeddings, math.nan, "float32"))]
        if self.classes is not None and batch.scores is not None:
            cls = batch.scores.argmax(axis=1)[:, None] if len(batch.scores) else np.zeros((0, 1), np.int64)
            arrays.append((self.classes, self._cell_values(batch, cls, NODATA, "uint8")))
            scores = np.concatenate([batch.scores, normalised_entropy(batch.scores)[:, None]], axis=1)
            arrays.append((self.scores, self._cell_values(batch, scores, math.nan, "float32")))
        for start, stop in _row_runs(batch.tiles):
            row, col = batch.tiles[start].row, batch.tiles[start].col
            for raster, values in arrays:
                raster.write(values[start:stop].T[:, None, :], row, col)

    def _write_landcover(self, batch: Batch) -> None:
        data_index = np.cumsum(batch.has_data) - 1
        for i, tile in enumerate(batch.tiles):
            probs = batch.landcover[data_index[i]] if batch.has_data[i] and batch.landcover is not None else None
            self._write_strips(self.mosaic.add(tile, probs, batch.valid[i]))

    def _write_strips(self, strips: list[tuple[int, np.ndarray]]) -> None:
        """Write finished land-cover strips, except rows that were final before a resume."""
        for row, strip in trim_strips(strips, self.landcover_final):
            self.landcover.write(strip, row)

    def _tile_records(self, batch: Batch) -> pd.DataFrame:
        """Rows of tiles.gpkg for the batch's tiles with data."""
        tiles = [t for t, ok in zip(batch.tiles, batch.has_data) if ok]
        rec: dict[str, Any] = {"row": [t.row for t in tiles], "col": [t.col for t in tiles],
                               "valid_frac": batch.valid[batch.has_data].mean(axis=(1, 2)).astype(np.float32).tolist()}
        if batch.scores is not None and self.sound_classes:
            k = min(TOP_K, batch.scores.shape[1])
            order = np.argsort(-batch.scores, axis=1)[:, :k]
            for j in range(k):
                rec[f"sound_{j + 1}"] = [self.sound_classes[i]["name"] for i in order[:, j]]
                rec[f"score_{j + 1}"] = np.take_along_axis(batch.scores, order[:, j:j + 1], 1)[:, 0].tolist()
        if self.gallery is not None and len(tiles):
            rec.update(self.gallery(batch.embeddings))
        return pd.DataFrame(rec)

    def finish(self) -> list[Path]:
        """Make every COG and GeoPackage in the folder (journaled, see :mod:`geo.journal`); returns
        their paths. First, unless resuming after it: flush land cover, seal the staging rasters and
        save the remaining tile records with the journal at phase "finishing". Then each product
        not in the journal's ``made`` list is written atomically, read back whole and listed.
        WriteError when a product cannot be written; the staging files stay for a rerun."""
        if self.needs_tiles:
            self._end_tiling()
        kill_point(FINISHING)
        for name in self.names:
            if name not in self.checkpoint.made or not (self.folder / name).is_file():
                self._make(name)
                made = [n for n in self.checkpoint.made if n != name] + [name]
                self.checkpoint = replace(self.checkpoint, made=made)
                write_checkpoint(self.folder, self.checkpoint)
                kill_point(f"made:{name}")
        return [self.folder / name for name in self.names]

    def _end_tiling(self) -> None:
        """Write the last land-cover strips, seal every staging raster (WriteError on a write
        error), save every remaining tile record and journal phase "finishing"."""
        if self.landcover is not None:
            self._write_strips(self.mosaic.finish())
        for raster in self.rasters:
            raster.seal()
        self._save(self.grid.cell_shape[0], FINISHING)

    def _make(self, name: str) -> None:
        """Write one product into the folder from the sealed staging rasters and the tile parts."""
        path = self.folder / name
        if name == LANDCOVER:
            self._make_landcover(path)
        elif name in RESAMPLING:
            cog_from_staging(staging_path(path), path, RESAMPLING[name])
        elif name == TILES_GPKG:
            frames = [f for f in (pd.read_parquet(self.folder / p) for p in self.checkpoint.parts) if len(f)]
            table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"row": [], "col": []})
            write_gpkg(tiles_frame(table, self.grid.cell_transform, self.crs), path, "tiles", "Polygon")
        else:
            polygons = landcover_polygons(self.folder / LANDCOVER, self.landcover_classes, output_gsd(self.grid),
                                          self.min_area_m2)
            write_gpkg(polygons, path, "landcover", "MultiPolygon")

    def _make_landcover(self, path: Path) -> None:
        """``landcover.tif`` on the input's grid (:mod:`geo.landcover_grid`): the blended model-pixel
        staging raster resampled into a second staging raster, then copied to the COG."""
        rows, cols = output_shape(self.grid)
        on_grid = StagedRaster(self.folder / LANDCOVER_ON_GRID, width=cols, height=rows, count=1, dtype="uint8",
                               transform=output_transform(self.grid), crs=self.crs, nodata=NODATA,
                               descriptions=["landcover_class"], colors=class_colors(self.landcover_classes),
                               tags=self.tags, band_tags=class_name_tags(self.landcover_classes))
        regrid(staging_path(path), on_grid, self.grid)
        cog_from_staging(on_grid.staging, path, RESAMPLING[LANDCOVER])

    def close(self) -> None:
        """Close the staging files and keep them with the journal (the run was interrupted; a rerun
        resumes from the last checkpoint)."""
        for raster in self.rasters:
            raster.close()

    def discard(self) -> None:
        """Close and delete every staging file (after an error)."""
        for raster in self.rasters:
            raster.discard()


def _row_runs(tiles: Sequence[Any]) -> list[tuple[int, int]]:
    """[start, stop) index runs of consecutive tiles in the same cell row."""
    runs, start = [], 0
    for i in range(1, len(tiles) + 1):
        if i == len(tiles) or tiles[i].row != tiles[start].row:
            runs.append((start, i))
            start = i
    return runs

