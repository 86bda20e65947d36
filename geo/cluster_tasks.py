"""What runs on a Ray worker for ``python -m geo.map --ray``: one task per input file.

Both tasks run ``geo.map``'s own per-file code (``_map_one``: the folder lock, skip when up to
date, resume from the journal, map, publish, run.json) on one input, in the worker process, and
return its :class:`geo.map.FileResult`. They add a ``cluster`` entry to run.json: the cluster
(:func:`geo.ray_runtime.describe_cluster`), the node, host and process that mapped the file, and
whether it was split.

- :func:`map_file`: the whole file in this task, with the bundle's backend opened once per worker
  process (kept for the next file the process gets) with the task's CPUs as its thread budget.
- :func:`map_split_file`: this task reads and writes the file (it owns the file's
  ``ProductSet``) while inference runs on the pool of :mod:`geo.infer_pool`, with
  ``PoolBackend.concurrency`` calls in flight.

A worker process killed mid-file (SIGKILL, out of memory, node lost) is replaced by Ray, which runs
the task again (``FILE_RETRIES`` times); the kernel released the dead process's lock on the output
folder (``geo.lock``), so the new attempt takes it and resumes from the file's last checkpoint
(``geo.journal``): no tile is written twice or left out.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from geo.infer_pool import PoolBackend
from geo.map import FileResult, MapOptions, _gallery_lookup, _load_model, _map_one, _Model
from geo.ray_runtime import assigned_cpus, this_node

FILE_RETRIES = 3  # attempts after the first when a worker process dies mid-file

_models: dict[tuple[str, str, int | None], _Model] = {}  # (bundle, backend, streams) -> model, per worker process
_bundles: dict[str, _Model] = {}  # bundle -> model without a backend of its own (split files)


def worker_model(bundle: str, backend: str, streams: int | None = None) -> _Model:
    """The bundle and backend of this worker process, opened on first use (``geo.map._load_model``);
    its ``streams`` (None: default) share the task's CPUs, not every core of the node."""
    key = (bundle, backend, streams)
    if key not in _models:
        _models[key] = _load_model(bundle, backend, streams, cores=assigned_cpus())
    return _models[key]


def worker_bundle(bundle: str) -> _Model:
    """The bundle loaded in this worker process (torch-free), its hash and gallery lookup, without
    a backend: a split file's backend is the pool."""
    if bundle not in _bundles:
        from export.runtime import as_bundle

        loaded = as_bundle(bundle)
        _bundles[bundle] = _Model(loaded, loaded.content_hash(), None, _gallery_lookup(loaded))
    return _bundles[bundle]


@ray.remote
def map_file(path: str, out_root: str, bundle: str, backend: str, options: MapOptions,
             cluster: dict[str, Any]) -> FileResult:
    """Map one input in this task (module doc); ``cluster``: the cluster's description."""
    model = worker_model(bundle, backend, options.streams)
    extra = {"cluster": {**cluster, "node": this_node(), "split": False}}
    return _map_one(Path(path), Path(out_root), {}, replace(model, run_extra=extra), options)


@ray.remote
def map_split_file(path: str, out_root: str, bundle: str, actors: list[Any], profile: dict[str, Any],
                   options: MapOptions, cluster: dict[str, Any]) -> FileResult:
    """Read and write one input here while its tiles are inferred by ``actors`` (module doc);
    ``profile``: their backend (``geo.infer_pool.start_pool``)."""
    shared = worker_bundle(bundle)
    pool = PoolBackend(actors, shared.bundle, profile)
    extra = {"cluster": {**cluster, "node": this_node(), "split": True, "inference_actors": len(actors),
                         "inference_nodes": profile["nodes"]}}
    model = replace(shared, backend=pool, infer_workers=pool.concurrency, run_extra=extra)
    return _map_one(Path(path), Path(out_root), {}, model, options)
