"""``python -m geo.map IN... --ray ADDRESS``: the same mapping, spread over a Ray cluster.

This process (the driver) expands the inputs, loads the bundle once to check it and to count
each input's tiles from its header, then connects (:mod:`geo.ray_runtime`) and runs two phases:

1. **Split inputs** (more than ``split_tiles`` tiles, ``--ray-split-tiles``): a pool of inference
   actors starts on every node (:mod:`geo.infer_pool`); each such input is one task that reads and
   writes the file while the actors infer its batches (:func:`geo.cluster_tasks.map_split_file`);
   at most one such task per node runs at once. The pool is stopped after the last one.
2. **Every other input** is one task (:func:`geo.cluster_tasks.map_file`) running geo.map's own
   per-file code on some worker. Each task gets ``cpus`` CPUs (the cluster's CPUs shared over the
   files, at least 1, at most the smallest node's) and, on a cluster with GPUs, one GPU.

Outputs, run.json (plus its ``cluster`` entry), skip, resume, locks and one-line failures are
those of a local run (:mod:`geo.map`): OUT and the inputs must be paths that every node sees (a
shared filesystem, docs/scale.md); paths are made absolute here. Progress: one bar for files and
one for tiles (:mod:`geo.cluster_progress`). A worker process that dies mid-file is replaced and
the file resumed from its checkpoint (``FILE_RETRIES`` times, then that file fails alone with one
line and keeps its work for a rerun); when the driver itself is killed, Ray ends the run's tasks
and rerunning the same command resumes every unfinished input. A bundle or backend that cannot be
used stops the run with one line, as locally.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from geo.grid import TileGrid
from geo.map import (FILE_ERRORS, PARTIAL, RAY_SPLIT_TILES, FileResult, MapOptions, check_stride, claim_output,
                     expand_inputs)
from geo.raster import open_raster
from geo.ray_runtime import connect, import_ray
from model.core.errors import GeoaudioError, one_line

POLL_S = 0.25  # seconds between looks at finished tasks and progress
TASKS_PER_SLOT = 2  # file tasks queued per task the cluster can run at once


@dataclass
class Job:
    """One input: its position in the batch, the path as given and absolute, its tile count
    (None when its header cannot be read: its task then fails it with the usual line)."""

    index: int
    given: Path
    path: Path
    tiles: int | None


def map_on_cluster(paths: Sequence[str | os.PathLike], bundle_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   backend: str = "auto", options: MapOptions = MapOptions(), address: str = "auto",
                   split_tiles: int = RAY_SPLIT_TILES) -> list[FileResult]:
    """Map each input into ``out_dir/<stem>/`` on the Ray cluster at ``address`` (see module doc
    and :func:`geo.map.map_files`, whose results and errors these are); one result per input, in
    order. A process already connected to Ray (``ray.init``) keeps its connection."""
    import_ray()  # one line when Ray is missing, before anything else
    from export.runtime import as_bundle

    inputs = expand_inputs(paths)
    bundle = str(Path(getattr(bundle_dir, "path", bundle_dir)).resolve())
    image_input = as_bundle(bundle).image_input  # a bad bundle fails here, before any connection
    check_stride(options.stride, image_input.tile_size)
    out_root = Path(out_dir).resolve()
    results: dict[int, FileResult] = {}
    jobs: list[Job] = []
    seen: dict[str, Path] = {}
    for i, given in enumerate(inputs):
        clash = claim_output(given, out_root, seen)
        if clash is not None:
            results[i] = clash
        else:
            jobs.append(Job(i, given, given.resolve(), _tile_count(given, image_input, options)))
    with connect(address) as cluster:
        _run_phases(jobs, results, len(inputs), out_root, bundle, backend, options, cluster, split_tiles)
    return [results[i] for i in range(len(inputs))]


def _tile_count(path: Path, image_input: Any, options: MapOptions) -> int | None:
    """Tiles of ``path``'s grid from its header alone; None when it cannot be read."""
    try:
        with open_raster(path, bands=options.bands, allow_ungeoreferenced=options.allow_ungeoreferenced,
                         allow_rotated=options.allow_rotated) as src:
            return len(TileGrid.from_source(src, image_input.tile_size, image_input.gsd, options.stride))
    except FILE_ERRORS:
        return None


def _run_phases(jobs: list[Job], results: dict[int, FileResult], files: int, out_root: Path, bundle: str,
                backend: str, options: MapOptions, cluster: dict[str, Any], split_tiles: int) -> None:
    """Phase 1 (split inputs on the inference pool), then phase 2 (one task per input); every
    result lands in ``results`` by input index."""
    from geo.cluster_progress import ClusterProgress
    from geo.cluster_tasks import FILE_RETRIES, map_file, map_split_file
    from geo.infer_pool import start_pool, stop_pool
    from geo.ray_runtime import alive_nodes

    progress = ClusterProgress(files, options.progress, options.on_progress, {str(j.path): str(j.given) for j in jobs})
    task_options = replace(options, progress=False, on_progress=progress.reporter())
    out, nodes = str(out_root), alive_nodes()
    try:
        for result in results.values():  # inputs refused before any task (output folder clash)
            _report(result)
            progress.file_done(str(result.path), False)
        split = [j for j in jobs if j.tiles is not None and j.tiles > split_tiles]
        whole = [j for j in jobs if j.tiles is None or j.tiles <= split_tiles]
        if split:
            actors, profile = start_pool(bundle, backend)
            try:
                task = map_split_file.options(num_cpus=0, max_retries=FILE_RETRIES)
                _run(split, lambda j: task.remote(str(j.path), out, bundle, actors, profile, task_options, cluster),
                     len(nodes), results, progress, out_root)
            finally:
                stop_pool(actors)
        if whole:
            cpus, gpus = file_resources(nodes, len(whole))
            task = map_file.options(num_cpus=cpus, num_gpus=gpus, max_retries=FILE_RETRIES, scheduling_strategy="SPREAD")
            slots = max(1, cluster["gpus"] if gpus else cluster["cpus"] // cpus)
            _run(whole, lambda j: task.remote(str(j.path), out, bundle, backend, task_options, cluster),
                 TASKS_PER_SLOT * slots, results, progress, out_root)
    finally:
        progress.close()


def file_resources(nodes: Sequence[dict[str, Any]], files: int) -> tuple[int, int]:
    """(CPUs, GPUs) of one file task on ``nodes`` (``geo.ray_runtime.alive_nodes``) for ``files``
    inputs: with GPUs, one GPU and the CPUs per GPU of the leanest GPU node; else
    ``floor(cluster CPUs / files)`` CPUs, at least 1 and at most the smallest node's CPUs."""
    gpu_nodes = [n for n in nodes if n["gpus"] > 0]
    if gpu_nodes:
        return max(1, min(n["cpus"] // n["gpus"] for n in gpu_nodes)), 1
    cpu_counts = [n["cpus"] for n in nodes if n["cpus"] > 0] or [1]
    return max(1, min(sum(cpu_counts) // max(1, files), min(cpu_counts))), 0


def _run(jobs: list[Job], submit: Callable[[Job], Any], window: int, results: dict[int, FileResult],
         progress: Any, out_root: Path) -> None:
    """Submit ``jobs`` keeping at most ``window`` tasks unfinished; record and report each result as
    its task ends, and show progress meanwhile."""
    import ray

    queue, running = deque(jobs), {}
    while queue or running:
        while queue and len(running) < window:
            job = queue.popleft()
            running[submit(job)] = job
        finished, _ = ray.wait(list(running), num_returns=len(running), timeout=POLL_S)
        progress.poll()
        for ref in finished:
            job = running.pop(ref)
            result = _outcome(ref, job, out_root)
            results[job.index] = result
            _report(result)
            progress.file_done(str(job.path), result.status == "mapped")


def _outcome(ref: Any, job: Job, out_root: Path) -> FileResult:
    """The task's result (with the input path as given). A file whose worker died more often than
    the retries allow, or whose inference actors were lost, fails alone; a bundle or backend
    problem (it concerns every file) is raised as the original one-line error; anything else is a
    bug and raised with its traceback."""
    import ray

    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, ray.exceptions.RayError):
            return _lost(job, out_root, cause)
        if isinstance(cause, (GeoaudioError, OSError)):
            raise cause from None
        raise
    except ray.exceptions.RayError as e:
        return _lost(job, out_root, e)
    result.path = job.given
    return result


def _lost(job: Job, out_root: Path, error: BaseException) -> FileResult:
    """A "failed" result for an input whose task could not finish on the cluster (one line)."""
    partial = out_root / job.given.stem / PARTIAL
    kept = f"; the work done so far is kept in {partial}: rerun to resume" if partial.is_dir() else ""
    reason = one_line(error).split(". ")[0][:200]
    return FileResult(job.given, "failed", out_root / job.given.stem,
                      f"{job.path}: the Ray cluster could not finish it ({type(error).__name__}: {reason}){kept}")


def _report(result: FileResult) -> None:
    """Print a failed or busy input's one line and its warnings, as a local run does."""
    if result.status in ("failed", "busy"):
        tqdm.write(f"error: {result.message}", file=sys.stderr)
    for w in result.warnings:
        tqdm.write(f"warning: {result.path}: {w}", file=sys.stderr)
