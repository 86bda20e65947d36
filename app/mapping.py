"""Mapping a scene for the app: reuse a cached map, or run ``python -m geo.map`` with progress.

A map is cached per (input, bundle hash, backend) in ``CACHE/maps/<key>/<stem>/``
(:func:`app.state.map_root`); the demo's own map (``app.demo``) is used for the demo scene with
the demo bundle and the backend it was mapped with. A folder counts as a finished map when
``geo.runinfo.is_complete`` says so (run.json present, same bundle hash, options and input).

Mapping runs ``python -m geo.map --progress-json`` as a child process and follows its JSON
progress lines on stderr (:mod:`geo.progress`) to feed a progress callback; ``geo.map`` writes
atomically and checkpoints, so an interrupted run leaves nothing half-written and resumes next time.
The cache is shared by every visitor: ``geo.map`` locks each map folder while it maps
(:mod:`geo.lock`) and is run with ``--wait``, so a second visitor mapping the same scene waits for
the first run and then finds the map finished ("skipped"), instead of failing or writing into it.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app.state import MAX_TILES, ROOT, map_root
from geo.progress import parse_line
from model.core.errors import GeoaudioError

Progress = Callable[[int, int], None]


class MapError(GeoaudioError, ValueError):
    """A scene that could not be mapped; the one-line message comes from geo.map or names the problem."""


@dataclass(frozen=True)
class Plan:
    """What mapping a scene would take: ``tiles`` model tiles, the tile grid's ``cells`` (rows,
    cols), geo.map's resolution ``warning`` (or "") and its ``refusal`` of imagery more than 8x
    coarser than the bundle (``geo.grid.resample_refusal``, or "": the app never maps it), and the
    grid's ``resolution_factor`` (bundle metres per pixel / the scene's, ``geo.grid.TileGrid``)."""

    tiles: int
    cells: tuple[int, int]
    warning: str
    refusal: str = ""
    resolution_factor: float = 1.0


def plan(path: Path, bundle: Any) -> Plan:
    """Tile count of ``path`` at the bundle's tile size and ground sample distance (``geo.grid``),
    with geo.map's resolution warning and refusal (naming the file by its name); RasterError for a
    raster geo.map cannot use."""
    from geo.grid import TileGrid, resample_refusal, resolution_warning
    from geo.raster import open_raster

    image_input = bundle.image_input
    with open_raster(path) as src:
        grid = TileGrid.from_source(src, image_input.tile_size, image_input.gsd)
    return Plan(len(grid), grid.cell_shape, resolution_warning(grid) or "", resample_refusal(grid, path.name) or "",
                grid.resolution_factor)


def too_many_tiles(path: Path, p: Plan, gsd: float) -> str:
    """The one-line refusal for a plan over :data:`MAX_TILES`, or "" when it is small enough."""
    if p.tiles <= MAX_TILES:
        return ""
    return (f"{path.name}: {p.tiles:,} tiles at the bundle's {gsd:g} m per pixel is more than the app maps "
            f"({MAX_TILES:,}); use a bundle made for this resolution, a smaller extract, or python -m geo.map")


def fitting_gsd(p: Plan, gsd: float) -> tuple[float, bool]:
    """The finest bundle ground sample distance (metres per pixel, rounded up to 3 digits) at which
    the app would map the scene of ``p`` (planned at the bundle's ``gsd``), from the two refusal
    rules themselves, and whether that figure is a rough one: the scene's pixels at most
    ``geo.grid.MAX_UPSAMPLE`` times coarser (``gsd / resolution_factor / MAX_UPSAMPLE``, exact), and
    at most :data:`MAX_TILES` tiles (the count falls with the square of the GSD:
    ``gsd * sqrt(tiles / MAX_TILES)``, rough, as tiles are whole)."""
    from geo.grid import MAX_UPSAMPLE

    upsample = gsd / (p.resolution_factor * MAX_UPSAMPLE) if p.refusal else 0.0
    tiles = gsd * math.sqrt(p.tiles / MAX_TILES) if p.tiles > MAX_TILES else 0.0
    return _round_up(max(upsample, tiles, gsd)), tiles > upsample


def _round_up(x: float, digits: int = 3) -> float:
    """``x`` > 0 rounded up to ``digits`` significant digits (37.51 -> 37.6, 37.5 -> 37.5)."""
    unit = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{math.ceil(x / unit - 1e-9) * unit:.{digits}g}")


def not_mapped(path: Path, p: Plan, gsd: float) -> str:
    """The one line saying why the app will not map ``path`` with a bundle at ``gsd`` metres per
    pixel (``p.refusal`` or :func:`too_many_tiles`) and what bundle would (:func:`fitting_gsd`);
    "" when it maps it."""
    refusal = p.refusal or too_many_tiles(path, p, gsd)
    if not refusal:
        return ""
    fit, rough = fitting_gsd(p, gsd)
    return f"Not mapped: {refusal}; a bundle trained at ≥ {'~' if rough else ''}{fit:g} m per pixel would fit it."


def finished_map(folder: Path, source: Path, bundle_hash: str, stride: int | None = None) -> bool:
    """Whether ``folder`` holds a finished geo.map run of ``source`` with that bundle, made with the
    default options and ``stride`` (None: the tile size; the demo's map has its own, see
    :attr:`app.demo.Demo.map_stride`)."""
    from geo.map import MapOptions
    from geo.runinfo import input_fingerprint, is_complete

    return is_complete(folder, bundle_hash, MapOptions(stride=stride).product_key(), input_fingerprint(source))


def map_folder(source: Path, input_id: str, bundle_hash: str, backend: str, demo: Any = None) -> Path:
    """Where the map of ``source`` with this bundle and backend lives (or will): the demo's own map
    when it matches, else ``CACHE/maps/<key>/<stem>``. ``backend`` is a concrete name (``auto``
    resolved first, ``app.pickers.concrete_backend``), so a map made with ``auto`` is the map of the
    backend ``auto`` took; the demo's map (made with ``auto``) matches that backend as recorded in
    its run.json, and ``auto`` itself."""
    if (demo is not None and source.resolve() == demo.scene.resolve()
            and bundle_hash == demo.info.get("bundle_hash") and backend in _demo_backends(demo)):
        return demo.map_dir
    return map_root(input_id, bundle_hash, backend) / source.stem


def _demo_backends(demo: Any) -> set[str]:
    """The backend names the demo's map answers to: the one it was asked for and the one its
    run.json records (what ``auto`` took)."""
    from geo.runinfo import read_run_info

    recorded = (read_run_info(demo.map_dir) or {}).get("backend")
    name = recorded.get("name") if isinstance(recorded, dict) else None
    return {demo.backend} | ({str(name)} if name else set())


def _follow(stream: Any, on_progress: Progress | None) -> list[str]:
    """Read the child's stderr to the end: report progress lines, return the other lines."""
    lines = []
    for raw in stream:
        text = raw.decode("utf-8", "replace").strip()
        found = parse_line(text)
        if found is not None:
            if on_progress is not None:
                on_progress(found[1], found[2])
        elif text:
            lines.append(text)
    return lines


def run_map(source: Path, bundle_dir: Path, backend: str, out_folder: Path,
            on_progress: Progress | None = None) -> list[str]:
    """Map ``source`` into ``out_folder`` (= ``OUT/<stem>``) with ``python -m geo.map``; returns its
    warnings. MapError with geo.map's one-line error when it fails."""
    if out_folder.name != source.stem:
        raise ValueError(f"geo.map writes OUT/{source.stem}, not {out_folder}")
    out_folder.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "geo.map", str(source), "--bundle", str(bundle_dir), "--out",
           str(out_folder.parent), "--backend", backend, "--no-progress", "--progress-json", "--wait",
           "--no-catalog"]  # a cache folder of one scene, not a region a user opens
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        lines = _follow(proc.stderr, on_progress)
        code = proc.wait()
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    if code != 0:
        raise MapError(errors[-1] if errors else f"{source}: geo.map stopped with exit status {code}: "
                                                 f"{lines[-1] if lines else 'no message'}")
    return [ln.removeprefix("warning: ") for ln in lines if ln.startswith("warning: ")]
