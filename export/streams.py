"""Sharing a CPU between inference calls: *streams* (calls running at once) and threads per stream.

One inference call that spreads every layer over all cores leaves cores idle at each layer's end
(every thread waits for the slowest one, and on a small machine the tile readers and the product
writer of ``geo.map`` take turns on the same cores). Running ``streams`` calls at once, each with
``cores // streams`` threads, keeps the cores busy: while one call waits, the other computes.
OpenVINO calls this its throughput mode; ONNX Runtime sessions and PyTorch modules may be called
from several threads at once.

Measured on 2 cores (``geo.map`` read-infer-write pipeline, 4,000 px native raster, random
resnet18 bundle; docs/performance.md): 2 streams of 1 thread against 1 call of 2 threads gave
torch 61 -> 76, onnx 98 -> 106, onnx-int8 200 -> 247 tiles/s. ``DEFAULT_CPU_STREAMS`` is
therefore 2 wherever there are at least 2 cores; a GPU backend keeps 1 (not measured here).

The cores a process may use are ``OMP_NUM_THREADS`` when set (Ray sets it to a task's CPUs; batch
job scripts usually do), else the CPUs in its affinity mask (``taskset``, cgroups' cpusets).
"""
from __future__ import annotations

import os

DEFAULT_CPU_STREAMS = 2  # inference calls at once on a CPU of at least this many cores


def available_cores() -> int:
    """CPU cores this process may use: ``OMP_NUM_THREADS`` when set to a positive whole number,
    else the CPUs of its affinity mask (``os.cpu_count()`` where there is none); at least 1."""
    told = os.environ.get("OMP_NUM_THREADS", "").strip()
    if told.isdigit() and int(told) > 0:
        return int(told)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def cpu_streams(streams: int | None = None, cores: int | None = None) -> tuple[int, int]:
    """(streams, threads per stream) for ``cores`` (default :func:`available_cores`): ``streams``
    as asked (None: ``DEFAULT_CPU_STREAMS``, but never more than the cores), each with
    ``max(1, cores // streams)`` threads."""
    cores = max(1, int(cores or available_cores()))
    if streams is None:
        streams = min(DEFAULT_CPU_STREAMS, cores)
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    return streams, max(1, cores // streams)
