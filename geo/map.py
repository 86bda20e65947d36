"""``python -m geo.map``: map GeoTIFFs to soundscape and land-cover products with a model bundle.

Each input ``IN.tif`` gives a folder ``OUT/IN/`` with the products of :mod:`geo.products` and a
``run.json`` (:mod:`geo.runinfo`). Work happens in ``OUT/IN/.partial/``; finished products are
renamed into place and ``run.json`` is written last, so a killed run leaves no half-written
product. A rerun skips inputs whose run.json matches (same bundle hash, options and input file);
an input whose run was interrupted (killed, Ctrl-C, power cut of the process) resumes from its
last checkpoint, taken every ``--checkpoint-every`` seconds (:mod:`geo.journal`), when the bundle,
backend, options and input are the same, and starts over otherwise (``--overwrite`` redoes
everything). Making and publishing the products are journaled phases too (:mod:`geo.journal`,
:mod:`geo.publish`): a run killed at any moment resumes on rerun, and a product is published only
after it reads back whole. A bad input (unreadable,
corrupt, all nodata, unsupported, more than 8x coarser than the bundle without
``--allow-resample``) fails with a one-line error and leaves nothing in OUT; the other
inputs are still mapped, and the exit status is 2 when any input failed.

A file that cannot be written (disk full) fails its input with one line; nothing is published and
no run.json written, and the work done is kept in ``.partial/`` for a rerun. Before mapping an
input, what it will write is estimated (:mod:`geo.space`) and an input that will not fit in the
free space fails with one line (``--ignore-free-space`` skips the check). Each output folder is
locked while it is mapped (:mod:`geo.lock`): a second process on the same input reports it as
"busy" (being mapped by process N) and goes on with its other inputs, or waits with ``--wait``;
the exit status is 2 when any input failed or was busy.

After the run, ``OUT/catalog.json`` (a STAC catalogue of everything mapped in OUT) and the
mosaics ``OUT/mosaic/<product>.vrt`` are (re)written (:mod:`geo.catalog`; ``--no-catalog`` skips
them, ``--mosaic-crs`` warps the mosaics to one CRS).

With ``--ray ADDRESS`` the inputs are mapped on a Ray cluster by the same per-file code
(:mod:`geo.cluster`, docs/scale.md); without it Ray is never imported.

Python API: :func:`map_files`.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

os.environ.setdefault("GDAL_CACHEMAX", "64")  # MB; GDAL's block cache counts towards peak memory (docs/performance.md)

from tqdm import tqdm  # noqa: E402

from geo.errors import FolderBusyError, NoSpaceError, RasterError, WriteError  # noqa: E402
from geo.gdal_log import free_space_note  # noqa: E402
from geo.grid import TileGrid, resample_refusal, resolution_warning  # noqa: E402
from geo.journal import JOURNAL, Checkpoint, kill_point  # noqa: E402
from geo.landcover_grid import output_gsd  # noqa: E402
from geo.lock import LOCK_FILE, folder_lock  # noqa: E402
from geo.pipeline import Timings, run_pipeline  # noqa: E402
from geo.products import CHECKPOINT_S, NEAREST_K, GalleryLookup, ProductSet, product_names  # noqa: E402
from geo.progress import OnProgress, TileProgress, json_lines  # noqa: E402
from geo.publish import pending_publication, publish  # noqa: E402
from geo.raster import RASTER_READ_ERRORS, describe, open_raster  # noqa: E402
from geo.runinfo import input_fingerprint, is_complete, versions, write_run_info  # noqa: E402
from geo.space import check_free_space, estimate, written_bytes  # noqa: E402
from model.bundle.files import GALLERY_FILE  # noqa: E402
from model.core.errors import GeoaudioError, one_line  # noqa: E402

if TYPE_CHECKING:
    from model.bundle import Bundle

PARTIAL = ".partial"
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")  # what a folder given as input contributes
MIN_AREA_PIXELS = 16  # default --min-area: this many land-cover pixels
MAX_TILES = 1_000_000  # default --max-tiles: about 2 h at 150 tiles/s on two CPU cores (docs/reliability.md)
RAY_SPLIT_TILES = 20_000  # default --ray-split-tiles: 2-5 min of one 2-core CPU node (docs/scale.md)
KNOWN_PRODUCTS = product_names(True, True)
FILE_ERRORS = (GeoaudioError, OSError) + RASTER_READ_ERRORS  # bad input: that file fails alone; others are bugs
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # OSError numbers of a write that found no space


@dataclass(frozen=True)
class MapOptions:
    """Settings of a mapping run. ``stride`` in model pixels (None: the tile size); ``bands``
    1-based (r, g, b) or None (automatic); ``min_area_m2`` the smallest land-cover polygon (None:
    ``MIN_AREA_PIXELS`` land-cover pixels); ``batch`` tiles per inference call; ``workers``
    reader threads; ``checkpoint_s`` seconds between resumable checkpoints; ``on_progress(path,
    done, total)`` is called with the tiles done after each batch (:mod:`geo.progress`);
    ``max_tiles``: an input whose grid has more tiles fails before anything is read or written
    (None: no limit, ``--force-large``); ``wait``: wait for another process mapping the same output
    folder instead of reporting it busy; ``check_space``: refuse an input whose estimated writes
    exceed the free space; ``allow_resample``: map an input more than 8x coarser than the bundle
    (``geo.grid.resample_refusal``, refused by default before anything is read or written);
    ``streams``: inference calls at once, the cores split between them (None: the backend's
    default, 2 on a CPU of 2+ cores, :mod:`export.streams`)."""

    stride: int | None = None
    bands: tuple[int, int, int] | None = None
    allow_ungeoreferenced: bool = False
    allow_rotated: bool = False
    min_area_m2: float | None = None
    batch: int = 32
    workers: int = 2
    overwrite: bool = False
    progress: bool = True
    checkpoint_s: float = CHECKPOINT_S
    on_progress: OnProgress | None = field(default=None, compare=False)
    max_tiles: int | None = MAX_TILES
    wait: bool = False
    check_space: bool = True
    allow_resample: bool = False
    streams: int | None = None

    def product_key(self) -> dict[str, Any]:
        """The options that change the products (compared with run.json to decide a skip)."""
        return {"stride": self.stride, "bands": list(self.bands) if self.bands else None,
                "allow_ungeoreferenced": self.allow_ungeoreferenced, "allow_rotated": self.allow_rotated,
                "min_area_m2": self.min_area_m2}


@dataclass
class FileResult:
    """Outcome for one input: ``status`` is "mapped", "skipped", "failed" or "busy" (another
    process is mapping its output folder)."""

    path: Path
    status: str
    out_dir: Path
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] | None = None


@dataclass
class _Model:
    """What every file of a batch shares: the bundle, its hash, the backend, the gallery lookup;
    ``infer_workers``: inference calls the pipeline keeps in flight (> 1 only for a thread-safe
    backend that is itself a pool, :mod:`geo.infer_pool`); ``run_extra``: more run.json fields
    (the ``cluster`` description of a ``--ray`` run, :mod:`geo.cluster`)."""

    bundle: Any
    bundle_hash: str
    backend: Any
    gallery: Any
    infer_workers: int = 1
    run_extra: dict[str, Any] = field(default_factory=dict)


def map_files(paths: Sequence[str | os.PathLike], bundle_dir: str | os.PathLike | Bundle, out_dir: str | os.PathLike,
              backend: str = "auto", options: MapOptions = MapOptions()) -> list[FileResult]:
    """Map each input into ``out_dir/<stem>/``; one result per input, in order (see module doc).
    A folder among ``paths`` stands for the rasters directly inside it (:func:`expand_inputs`).
    ``bundle_dir``: a bundle folder or a loaded ``model.bundle.Bundle``; either way the bundle is
    loaded (at most) and hashed once for the whole batch.

    Bundle and backend problems raise (they concern every file); per-file problems become
    "failed" results, and an input whose output folder another process is mapping a "busy" one
    (unless ``options.wait``).
    """
    paths = expand_inputs(paths)
    model = _load_model(bundle_dir, backend, options.streams)
    check_stride(options.stride, model.bundle.image_input.tile_size)
    out_root = Path(out_dir)
    results: list[FileResult] = []
    seen: dict[str, Path] = {}
    bar = tqdm(total=len(paths), desc="files", unit="file", position=0, disable=not options.progress)
    try:
        for path in map(Path, paths):
            result = _map_one(path, out_root, seen, model, options)
            if result.status in ("failed", "busy"):
                tqdm.write(f"error: {result.message}", file=sys.stderr)
            for w in result.warnings:
                tqdm.write(f"warning: {path}: {w}", file=sys.stderr)
            results.append(result)
            bar.update(1)
    finally:
        bar.close()
        model.backend.close()  # e.g. PyTorch's thread count, which the streams set for the process
    return results


def check_stride(stride: int | None, tile_size: int) -> None:
    """RasterError (one line) unless ``stride`` is None or 1..``tile_size`` model pixels."""
    if stride is not None and not 1 <= stride <= tile_size:
        raise RasterError(f"--stride {stride} must be between 1 and the bundle's tile size ({tile_size} px)")


def expand_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """``paths`` with each folder replaced by the rasters directly inside it (suffixes in
    ``RASTER_SUFFIXES``, case-insensitive, sorted by name; hidden files, such as the temporary files of
    an interrupted atomic write, are passed over); a folder without any stays as it is
    and fails with its own one-line error."""
    out: list[Path] = []
    for path in map(Path, paths):
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in RASTER_SUFFIXES) \
            if path.is_dir() else []
        out += found or [path]
    return out


def _load_model(bundle_dir: str | os.PathLike | Bundle, backend: str, streams: int | None = None,
                cores: int | None = None) -> _Model:
    """The bundle (loaded once, by ``open_backend``), its content hash (computed once and kept on
    the Bundle), the backend set up for ``streams`` inference calls at once on ``cores`` CPU cores
    (``Backend.set_streams``; None: defaults) with its graphs opened (``Backend.prepare``), and the
    gallery lookup, shared by every file of the batch."""
    from export.runtime import open_backend

    engine = open_backend(bundle_dir, name=backend)
    engine.set_streams(streams, cores)
    engine.prepare()
    bundle = engine.bundle
    return _Model(bundle, bundle.content_hash(), engine, _gallery_lookup(bundle), infer_workers=engine.concurrency)


def _gallery_lookup(bundle: Any) -> GalleryLookup | None:
    """A lookup for tiles.gpkg's ``near_*`` columns (``model.bundle.gallery.nearest_in``), or None when
    the bundle has no usable gallery (missing file, gallery made with another audio encoder) or
    ``model.heads.gallery`` is not installed."""
    if not (Path(bundle.path) / GALLERY_FILE).is_file():
        return None
    try:
        from model.bundle import gallery
    except ImportError:
        return None
    try:
        rows, vectors = gallery.load_gallery(bundle)  # checked against the audio encoder once, here
    except (GeoaudioError, OSError) as e:
        tqdm.write(f"warning: gallery not used: {one_line(e)}", file=sys.stderr)
        return None

    def lookup(embeddings):
        found = gallery.nearest_in(vectors, embeddings, NEAREST_K, bundle.distance)
        return gallery_columns(gallery.neighbour_table(rows, *found))

    return lookup


def gallery_columns(found: Any) -> dict[str, list[Any]]:
    """``near_j_key`` / ``near_j_title`` / ``near_j_distance`` columns (j = 1 nearest) from a
    ``model.bundle.gallery.neighbour_table``: one row per (``query``, ``rank``) with ``key``, ``title``,
    ``distance``."""
    columns: dict[str, list[Any]] = {}
    for rank, part in found.sort_values(["query", "rank"]).groupby("rank", sort=True):
        j = int(rank) + 1
        columns[f"near_{j}_key"] = part["key"].astype("int64").tolist()
        columns[f"near_{j}_title"] = part["title"].astype(str).tolist()
        columns[f"near_{j}_distance"] = part["distance"].astype(float).tolist()
    return columns


def claim_output(path: Path, out_root: Path, seen: dict[str, Path]) -> FileResult | None:
    """Record that ``path`` maps into ``out_root/<stem>``; a "failed" result when an earlier input of
    the batch (in ``seen``, stem -> path) already uses that folder."""
    out = out_root / path.stem
    if path.stem in seen:
        return FileResult(path, "failed", out, f"{path}: output folder {out} is already used by {seen[path.stem]} "
                                              f"in this batch; rename one of them")
    seen[path.stem] = path
    return None


def _map_one(path: Path, out_root: Path, seen: dict[str, Path], model: _Model, options: MapOptions) -> FileResult:
    """Skip, map or fail one input (see module doc)."""
    out = out_root / path.stem
    clash = claim_output(path, out_root, seen)
    if clash is not None:
        return clash
    waiting = lambda message: tqdm.write(f"waiting: {path}: {message}", file=sys.stderr)  # noqa: E731
    try:
        with folder_lock(out, options.wait, waiting):
            return _map_locked(path, out, model, options)
    except FolderBusyError as e:
        return FileResult(path, "busy", out, _failure(path, e))


def _map_locked(path: Path, out: Path, model: _Model, options: MapOptions) -> FileResult:
    """Skip, map or fail one input whose output folder this process has locked (the lock
    created the folder when it was missing: a failed new folder is removed again)."""
    partial = out / PARTIAL
    if (not options.overwrite and path.is_file()
            and is_complete(out, model.bundle_hash, options.product_key(), input_fingerprint(path))):
        shutil.rmtree(partial, ignore_errors=True)  # left by a run killed after its run.json
        return FileResult(path, "skipped", out, "up to date")
    existed = any(p.name not in (PARTIAL, LOCK_FILE) for p in out.iterdir())
    if options.overwrite:
        shutil.rmtree(partial, ignore_errors=True)
    warnings: list[str] = []
    try:
        timings = _map_into(path, out, partial, model, options, warnings)
    except FILE_ERRORS as e:
        return FileResult(path, "failed", out, _failed_run(path, out, partial, existed, e), warnings)
    return FileResult(path, "mapped", out, "", warnings, timings.to_dict())


def _failed_run(path: Path, out: Path, partial: Path, existed: bool, error: BaseException) -> str:
    """Clean up after a failed input and say why in one line. A bad input leaves nothing behind;
    after a write error or a refusal for space the work done so far stays in ``partial`` (a rerun
    resumes from it) and the line says so."""
    message = _failure(path, error)
    if isinstance(error, OSError) and error.errno in DISK_FULL and not isinstance(error, GeoaudioError):
        message = f"{path}: cannot write in {out}: {error.strerror}{free_space_note(out)}"
    if _write_failure(error) and (partial / JOURNAL).is_file():
        return f"{message}; the work done so far is kept in {partial}: rerun to resume"
    shutil.rmtree(partial, ignore_errors=True)
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
    return message


def _write_failure(error: BaseException) -> bool:
    """Whether ``error`` says the output could not be written (not that the input is bad)."""
    return isinstance(error, (WriteError, NoSpaceError)) or (isinstance(error, OSError) and error.errno in DISK_FULL)


def _failure(path: Path, error: BaseException) -> str:
    """The one-line reason a file failed, starting with the file unless the message names it."""
    text = one_line(error)
    return text if str(path) in text else f"{path}: {text}"


@dataclass
class _Plan:
    """What one input will be mapped with, decided before any tile is read."""

    grid: TileGrid
    scaling: Any
    source: dict[str, Any]
    crs: Any
    open_kwargs: dict[str, Any]
    landcover: bool
    min_area_m2: float
    fingerprint: dict[str, int]
    start_tile: int = 0  # first tile mapped in this run (> 0 when resuming)


def _plan(path: Path, model: _Model, options: MapOptions, warnings: list[str]) -> _Plan:
    """Open and validate the input once: its grid, scaling and description (RasterError if bad)."""
    open_kwargs = dict(bands=options.bands, allow_ungeoreferenced=options.allow_ungeoreferenced,
                       allow_rotated=options.allow_rotated)
    image_input = model.bundle.image_input
    fingerprint = input_fingerprint(path) if path.is_file() else {}
    with open_raster(path, **open_kwargs) as src:
        try:
            grid = TileGrid.from_source(src, image_input.tile_size, image_input.gsd, options.stride)
        except RasterError as e:
            raise RasterError(f"{path}: {e}") from None
        refusal = None if options.allow_resample else resample_refusal(grid, str(path))
        if refusal:  # from the header alone, before the scaling reads any pixel
            raise RasterError(refusal)
        scaling, source, crs = src.scaling, describe(src), src.crs
    _check_size(path, grid, options.max_tiles)
    warning = resolution_warning(grid)
    if warning:
        warnings.append(warning)
    min_area = options.min_area_m2
    if min_area is None:
        gx, gy = output_gsd(grid)
        min_area = MIN_AREA_PIXELS * gx * gy
    landcover = _landcover_usable(model.backend, image_input, warnings)
    return _Plan(grid, scaling, source, crs, open_kwargs, landcover, min_area, fingerprint)


def _check_size(path: Path, grid: TileGrid, max_tiles: int | None) -> None:
    """RasterError (one line: the file, its size, its tiles, the limit) when the grid has more than
    ``max_tiles`` tiles: a header can claim any size, so this is checked before anything is read."""
    if max_tiles is not None and len(grid) > max_tiles:
        rows, cols = grid.cell_shape
        raise RasterError(f"{path}: {grid.width:,} x {grid.height:,} px is {len(grid):,} tiles ({rows:,} x {cols:,}) "
                          f"of {grid.tile_size} px at {grid.gsd:g} m, more than the limit of {max_tiles:,} "
                          f"(--max-tiles N raises it, --force-large removes it)")


def _map_into(path: Path, out: Path, partial: Path, model: _Model, options: MapOptions,
              warnings: list[str]) -> Timings:
    """Map one input: stage everything in ``partial``, publish into ``out``, write run.json last,
    then delete ``partial``. An interrupted publication of the same run is only completed."""
    start = time.perf_counter()
    plan = _plan(path, model, options, warnings)
    key = _run_key(plan, model, options)
    checkpoint = pending_publication(partial, out, key)
    if checkpoint is None:
        if options.check_space:
            _check_space(out, partial, plan, model)
        partial.mkdir(parents=True, exist_ok=True)
        timings, names, checkpoint = _make_products(path, partial, plan, model, options, key)
    else:
        timings, names, plan.start_tile = Timings(), list(checkpoint.made), len(plan.grid)
    publish(partial, out, checkpoint, names, KNOWN_PRODUCTS)
    timings.total_s = time.perf_counter() - start
    write_run_info(out, _run_info(path, plan, model, options, names, timings, warnings))
    kill_point("run.json")
    shutil.rmtree(partial, ignore_errors=True)
    return timings


def _check_space(out: Path, partial: Path, plan: _Plan, model: _Model) -> None:
    """NoSpaceError when what this input will write does not fit in the free space (geo.space)."""
    backend = model.backend
    sounds = len(backend.soundscape_classes) if backend.has_soundscape else 0
    need = estimate(plan.grid, backend.embedding_dim, sounds, plan.landcover)
    check_free_space(out, need, written_bytes(partial) if partial.is_dir() else 0)


def _make_products(path: Path, partial: Path, plan: _Plan, model: _Model, options: MapOptions,
                   key: dict[str, Any]) -> tuple[Timings, list[str], Checkpoint]:
    """Run the pipeline into a :class:`ProductSet` staged in ``partial`` (resuming a matching
    interrupted run from tile ``plan.start_tile``; not at all when its tiling was finished) and
    finish it; returns the timings, the product names and the journal. Bad input discards the
    staging files; an interruption or a write error keeps them for the next run."""
    backend = model.backend
    tags = {"geoaudio_bundle_hash": model.bundle_hash, "geoaudio_distance": model.bundle.distance,
            "geoaudio_source": path.name}
    products = ProductSet(partial, plan.grid, plan.crs, backend.embedding_dim,
                          backend.soundscape_classes if backend.has_soundscape else None,
                          backend.landcover_classes if plan.landcover else None,
                          tags, plan.min_area_m2, model.gallery, key, options.checkpoint_s)
    plan.start_tile = products.start_tile
    bar = tqdm(total=len(plan.grid), initial=plan.start_tile, desc=path.name, unit="tile", position=1,
               leave=False, disable=not options.progress)
    progress = TileProgress(str(path), len(plan.grid), plan.start_tile, bar, options.on_progress)
    try:
        timings = Timings()
        if products.needs_tiles:
            timings = run_pipeline(lambda: open_raster(path, **plan.open_kwargs), plan.grid, plan.scaling, backend,
                                   products.add, options.batch, options.workers, progress, plan.landcover,
                                   plan.start_tile, infer_workers=model.infer_workers)
        if products.tiles_with_data == 0:
            raise RasterError(f"{path}: no valid pixels (every pixel is nodata or masked)")
        t0 = time.perf_counter()
        files = products.finish()
        timings.write_s += time.perf_counter() - t0
    except FILE_ERRORS as e:
        if _write_failure(e):
            products.close()  # a rerun resumes from the last checkpoint once there is space
        else:
            products.discard()
        raise
    except BaseException:
        products.close()
        raise
    finally:
        bar.close()
    return timings, [f.name for f in files], products.checkpoint


def _run_key(plan: _Plan, model: _Model, options: MapOptions) -> dict[str, Any]:
    """What must not change for an interrupted run to be resumed (see geo.journal)."""
    return {"bundle_hash": model.bundle_hash, "backend": model.backend.name, "options": options.product_key(),
            "input": plan.fingerprint, "grid": plan.grid.to_dict(), "scaling": plan.scaling.to_dict(),
            "landcover": plan.landcover}


def _run_info(path: Path, plan: _Plan, model: _Model, options: MapOptions, names: list[str],
              timings: Timings, warnings: list[str]) -> dict[str, Any]:
    """The content of run.json (see geo.runinfo)."""
    return {"bundle": {"path": str(Path(model.bundle.path).resolve()), "content_hash": model.bundle_hash},
            "backend": {"name": model.backend.name, "description": _describe(model.backend)},
            "versions": versions(), "input": {**plan.source, **plan.fingerprint},
            "options": options.product_key(), "min_area_m2_used": plan.min_area_m2, "grid": plan.grid.to_dict(),
            "scaling": plan.scaling.to_dict(), "products": names,
            "timings": timings.to_dict(), "resumed_at_tile": plan.start_tile, "warnings": warnings,
            "settings": {"batch": options.batch, "workers": options.workers}, **model.run_extra}


def _landcover_usable(backend: Any, image_input: Any, warnings: list[str]) -> bool:
    """Whether the land-cover head runs on the image tiles: it must expect the same tile size and
    GSD (else a warning, and no land-cover products)."""
    if not backend.has_landcover:
        return False
    head = backend.bundle.heads["landcover"]
    size, gsd = int(head.get("tile_size", image_input.tile_size)), float(head.get("gsd", image_input.gsd))
    if size == image_input.tile_size and abs(gsd - image_input.gsd) <= 1e-9 * gsd:
        return True
    warnings.append(f"land-cover head expects {size} px tiles at {gsd:g} m, the image encoder {image_input.tile_size} "
                    f"px at {image_input.gsd:g} m; land cover not mapped")
    return False


def _describe(backend: Any) -> Any:
    """The backend's own description, made JSON-safe."""
    try:
        return json.loads(json.dumps(backend.describe(), default=str))
    except (TypeError, ValueError):
        return str(backend.describe())


def _parse_bands(text: str) -> tuple[int, int, int]:
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must be three comma-separated numbers like 1,2,3, got {text!r}")
    if len(bands) != 3 or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"bands must be three 1-based band numbers like 3,2,1, got {text!r}")
    return bands  # type: ignore[return-value]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m geo.map``."""
    p = argparse.ArgumentParser(
        prog="python -m geo.map",
        description="Map GeoTIFFs with a model bundle: for each IN.tif, OUT/IN/ gets landcover.tif "
                    "(class per model pixel), soundscape.tif (class per tile cell), soundscape_scores.tif "
                    "(probability per class), embeddings.tif (embedding per tile cell) - cloud-optimised "
                    "GeoTIFFs on the input's grid - plus tiles.gpkg, landcover.gpkg and run.json. "
                    "Finished inputs are skipped on rerun; interrupted ones resume from their last checkpoint.",
        epilog="Exit status: 0 when every input was mapped or skipped, 2 when any failed or was busy "
               "(being mapped by another process; each is one 'error:' line on stderr) or the "
               "bundle/backend cannot be used.")
    p.add_argument("inputs", nargs="+", metavar="IN.tif", help="GeoTIFFs (or any GDAL raster) to map; a folder "
                                                              "means every .tif/.tiff/.vrt/.jp2/.img directly in it")
    p.add_argument("--bundle", required=True, help="model bundle folder")
    p.add_argument("--out", required=True, help="output folder; each input gets OUT/<input stem>/")
    p.add_argument("--backend", default="auto", help="inference backend: auto, torch, onnx, onnx-int8, "
                                                      "onnx-fp16, trt (default: auto, the fastest usable)")
    p.add_argument("--stride", type=_positive_int, default=None, metavar="PX",
                   help="cell spacing in model pixels (default: the tile size, no overlap); smaller strides "
                        "give overlapping tiles and a finer, blended land-cover map")
    p.add_argument("--bands", type=_parse_bands, default=None, metavar="R,G,B",
                   help="1-based band numbers to read as red, green, blue (default: from the colour "
                        "interpretation, else 1,2,3)")
    p.add_argument("--batch", type=_positive_int, default=32, metavar="N", help="tiles per inference call (32)")
    p.add_argument("--workers", type=_positive_int, default=2, metavar="K", help="reader threads (2)")
    p.add_argument("--streams", type=_positive_int, default=None, metavar="N",
                   help="inference calls at once, the CPU cores split between them (default: 2 on a CPU of 2 or "
                        "more cores, each with half the cores' threads; 1 on a GPU)")
    p.add_argument("--min-area", type=_non_negative, default=None, metavar="M2",
                   help=f"smallest land-cover polygon in landcover.gpkg, metres² (default: "
                        f"{MIN_AREA_PIXELS} land-cover pixels)")
    p.add_argument("--overwrite", action="store_true", help="map again even when outputs are up to date")
    p.add_argument("--wait", action="store_true",
                   help="when another process is mapping an input into the same output folder, wait for it "
                        "(default: report that input as busy and go on with the others)")
    p.add_argument("--ignore-free-space", action="store_true",
                   help="map even when the estimated writes exceed the free space of the output folder")
    p.add_argument("--max-tiles", type=_positive_int, default=MAX_TILES, metavar="N",
                   help=f"refuse an input of more than N tiles before reading it ({MAX_TILES:,}, about 2 h "
                        f"on two CPU cores)")
    p.add_argument("--force-large", action="store_true", help="map inputs of any size (no --max-tiles limit)")
    p.add_argument("--allow-resample", action="store_true",
                   help="map an input whose pixels are more than 8x coarser than the bundle's (refused by "
                        "default: every tile would be upsampled)")
    p.add_argument("--checkpoint-every", type=_non_negative, default=CHECKPOINT_S, metavar="S",
                   help=f"seconds between checkpoints an interrupted run resumes from ({CHECKPOINT_S:g})")
    p.add_argument("--allow-ungeoreferenced", action="store_true",
                   help="map rasters without CRS/geotransform in pixel units (pixel size taken as metres)")
    p.add_argument("--allow-rotated", action="store_true", help="map rasters with a rotated geotransform")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="map on a Ray cluster: HOST:PORT of its head, auto (RAY_ADDRESS or the cluster started on "
                        "this machine) or local (a Ray instance for this run only); OUT and the inputs must be "
                        "paths every node sees (docs/scale.md). Needs pip install 'geoaudio[cluster]'")
    p.add_argument("--ray-split-tiles", type=_positive_int, default=RAY_SPLIT_TILES, metavar="N",
                   help=f"with --ray, an input of more than N tiles is inferred by an inference actor on every "
                        f"node while one task reads and writes it ({RAY_SPLIT_TILES:,}); smaller inputs are one "
                        f"task each")
    p.add_argument("--mosaic-crs", type=_crs_text, default=None, metavar="CRS",
                   help="warp the mosaics OUT/mosaic/<product>.vrt to this CRS (e.g. EPSG:32632; default: one "
                        "mosaic per CRS of the inputs)")
    p.add_argument("--no-catalog", action="store_true",
                   help="do not write OUT/catalog.json (a STAC catalogue of everything mapped in OUT) and the "
                        "mosaics OUT/mosaic/ after the run (python -m geo.catalog OUT writes them later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--progress-json", action="store_true",
                   help='also write progress as JSON lines on stderr: {"progress": {"file": ..., "done": N, '
                        '"total": M}} (for programs that run geo.map)')
    return p


def summary(results: Sequence[FileResult]) -> str:
    """A few lines: counts, then one line per input."""
    counts = {s: sum(r.status == s for r in results) for s in ("mapped", "skipped", "failed", "busy")}
    lines = [f"{counts['mapped']} mapped, {counts['skipped']} skipped (up to date), {counts['failed']} failed"
             + (f", {counts['busy']} busy (being mapped by another process)" if counts["busy"] else "")]
    for r in results:
        detail = r.message if r.status in ("failed", "busy") else str(r.out_dir)
        if r.status == "mapped" and r.timings:
            detail += f" ({r.timings['tiles']} tiles, {r.timings['tiles_per_s']:.1f} tiles/s)"
        lines.append(f"  {r.status:8s} {detail}" if r.status in ("failed", "busy") else f"  {r.status:8s} {r.path}: {detail}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m geo.map``."""
    args = build_parser().parse_args(argv)
    options = MapOptions(stride=args.stride, bands=args.bands, allow_ungeoreferenced=args.allow_ungeoreferenced,
                         allow_rotated=args.allow_rotated, min_area_m2=args.min_area, batch=args.batch,
                         workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress,
                         checkpoint_s=args.checkpoint_every, on_progress=json_lines() if args.progress_json else None,
                         max_tiles=None if args.force_large else args.max_tiles, wait=args.wait,
                         check_space=not args.ignore_free_space, allow_resample=args.allow_resample,
                         streams=args.streams)
    if args.ray:
        from geo.cluster import map_on_cluster  # the one way into Ray (docs/scale.md)

        results = map_on_cluster(args.inputs, args.bundle, args.out, args.backend, options, args.ray,
                                 args.ray_split_tiles)
    else:
        results = map_files(args.inputs, args.bundle, args.out, args.backend, options)
    print(summary(results))
    failed = any(r.status in ("failed", "busy") for r in results)
    if not args.no_catalog and any(r.status in ("mapped", "skipped") for r in results):
        failed = not publish_catalogue_of(Path(args.out), args.mosaic_crs) or failed
    return 2 if failed else 0


def publish_catalogue_of(out: Path, mosaic_crs: str | None) -> bool:
    """Write OUT/catalog.json and OUT/mosaic/ over everything mapped in ``out`` (:mod:`geo.catalog`)
    and say so in one line; False (and one ``error:`` line) when they cannot be written."""
    from geo.catalog import publish_catalogue

    try:
        made = publish_catalogue(out, mosaic_crs)
    except (GeoaudioError, OSError) as e:
        print(f"error: catalogue of {out} not written: {one_line(e)}", file=sys.stderr)
        return False
    if made["catalog"] is not None:
        n = len(made["items"])
        print(f"catalogue: {made['catalog']} ({n} input{'s' if n != 1 else ''}), {len(made['mosaics'])} mosaics in "
              f"{out / 'mosaic'}")
    return True


def _crs_text(text: str) -> str:
    """``--mosaic-crs``: any CRS GDAL knows (EPSG:32632, WKT, PROJ), checked before mapping starts."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        CRS.from_user_input(text)
    except CRSError as e:
        raise argparse.ArgumentTypeError(f"not a CRS GDAL knows: {text!r} ({one_line(e)})")
    return text


if __name__ == "__main__":
    from model.core.cli import run_cli

    sys.exit(run_cli(main))
