"""Ray itself, for ``python -m geo.map --ray``: importing it, connecting to a cluster, describing it.

``ADDRESS`` is ``HOST:PORT`` (the head's GCS port, ``ray start --head --port PORT``), ``auto``
(``RAY_ADDRESS`` or the cluster started on this machine) or ``local`` (a Ray instance started for
this run and stopped after it). Every problem is one line (:class:`ClusterError`, exit status 2):
Ray missing, an address that is not of these forms, a head that does not answer (a TCP connect of
``CONNECT_TIMEOUT_S`` seconds is tried first, so an unreachable address fails at once instead of
after Ray's own retries), or a connection Ray refuses.

Ray is imported only by the functions here (and by the modules that :mod:`geo.cluster` imports
once :func:`import_ray` succeeded); a run without ``--ray`` never imports it. Ray's own settings
(``RAY_AUTH_MODE``, ``RAY_TMPDIR`` ...) are read from the environment as usual; usage statistics
are off unless ``RAY_USAGE_STATS_ENABLED`` says otherwise (no network access at run time).
"""
from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from typing import Any, Iterator

from model.core.errors import GeoaudioError, one_line

RAY_MISSING = "--ray needs Ray: pip install 'geoaudio[cluster]'"
CONNECT_TIMEOUT_S = 3.0  # seconds a TCP connect to HOST:PORT may take before the address is called unreachable
LOCAL, AUTO = "local", "auto"


class ClusterError(GeoaudioError, OSError):
    """Ray is missing, the cluster cannot be reached or cannot run the work (one line); an OSError,
    like any other trouble with the machines a run depends on."""


def import_ray() -> Any:
    """The ``ray`` module, or ClusterError (:data:`RAY_MISSING`) when it is not installed."""
    try:
        import ray
    except ImportError:
        raise ClusterError(RAY_MISSING) from None
    return ray


def split_address(address: str) -> tuple[str, int] | None:
    """(host, port) of a ``HOST:PORT`` address; None for ``auto``, ``local`` and ``ray://`` (Ray
    client) addresses; ClusterError for anything else."""
    if address in (LOCAL, AUTO) or "://" in address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray expects HOST:PORT, auto or local, got {address!r}")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """ClusterError (one line naming ``address``) unless a TCP connection to it opens within
    ``timeout_s`` seconds. Addresses without a host and port are left to Ray."""
    target = split_address(address) if address else None
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ClusterError(f"no Ray cluster answers at {address} ({reason.lower()}); start one with "
                           f"ray start --head --port {target[1]} (docs/scale.md), or pass --ray local") from None


@contextmanager
def connect(address: str) -> Iterator[dict[str, Any]]:
    """Connect this process to the cluster at ``address`` for the block (start a local instance for
    ``local``) and yield :func:`describe_cluster`; disconnect (stop the local instance) afterwards.
    An existing connection of this process (``ray.init`` called by the caller) is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield describe_cluster(address)
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address == LOCAL:
            ray.init(include_dashboard=False, **quiet)
        else:
            check_reachable(os.environ.get("RAY_ADDRESS", "") if address == AUTO else address)
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        if isinstance(e, ClusterError):
            raise
        where = "start a local Ray instance" if address == LOCAL else f"connect to the Ray cluster at {address}"
        raise ClusterError(f"cannot {where}: {one_line(e)}") from None
    try:
        yield describe_cluster(address)
    finally:
        ray.shutdown()


def describe_cluster(address: str) -> dict[str, Any]:
    """The cluster as run.json records it: Ray version, the address asked for and the GCS address
    connected to, alive nodes, and their CPUs and GPUs in all."""
    ray = import_ray()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"ray": ray.__version__, "address": address, "gcs_address": ray.get_runtime_context().gcs_address,
            "nodes": len(nodes), "cpus": int(sum(n["Resources"].get("CPU", 0) for n in nodes)),
            "gpus": int(sum(n["Resources"].get("GPU", 0) for n in nodes))}


def alive_nodes() -> list[dict[str, Any]]:
    """``{"id", "ip", "cpus", "gpus"}`` of every alive node, sorted by IP then id."""
    ray = import_ray()
    found = [{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "cpus": int(n["Resources"].get("CPU", 0)),
              "gpus": int(n["Resources"].get("GPU", 0))} for n in ray.nodes() if n.get("Alive")]
    return sorted(found, key=lambda n: (n["ip"], n["id"]))


def this_node() -> dict[str, Any]:
    """Where the calling task or actor runs: node id and IP, host name, process id."""
    ray = import_ray()
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(), "pid": os.getpid()}


def assigned_cpus() -> int:
    """CPUs Ray assigned to the calling task or actor (at least 1): the thread budget of its backend."""
    ray = import_ray()
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
