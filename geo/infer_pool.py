"""Inference actors on every node of a Ray cluster, and a backend that spreads calls over them.

For an input too large for one worker (``python -m geo.map --ray ... --ray-split-tiles N``), one
task reads and writes the file (:mod:`geo.cluster_tasks`) while its tiles are inferred by a pool
of :class:`InferenceActor` s, each holding one backend opened once with
``export.runtime.open_backend``:

- a node without GPUs gets one actor holding all of the node's CPUs (its backend's thread budget);
- a node with G GPUs gets G actors, each with one GPU and ``cpus // G`` CPUs;
- a node with no CPU and no GPU (a head started with ``--num-cpus 0``) gets none.

:class:`PoolBackend` has the attributes and methods of a backend that ``geo.pipeline.infer`` and
``geo.map`` use, so the file's ordinary pipeline runs on it with ``infer_workers =
PoolBackend.concurrency`` calls in flight (two per actor: one running, one queued). Each call goes to
the actor with the fewest calls in flight; the pipeline emits results in tile order whichever actor
computed them. It is thread-safe.

Faults: an actor whose process dies is restarted by Ray (``ACTOR_RESTARTS`` times; on its node, or
another when the node is gone) and the calls it had are run again on the new process, so the
pipeline only sees a slower call. When the restarts are used up, the call raises Ray's
``RayActorError``: the file's task then fails, its staging folder is kept, and a rerun resumes it.
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from geo.ray_runtime import ClusterError, alive_nodes, assigned_cpus, this_node
from model.core.errors import GeoaudioError, one_line

ACTOR_RESTARTS = 3  # restarts of a dead inference actor (and retries of each call it had)
CALLS_PER_ACTOR = 2  # calls in flight per actor: one running, one waiting in its queue
PROFILE_KEYS = ("name", "embedding_dim", "has_soundscape", "soundscape_classes", "has_landcover",
                "landcover_classes")


class InferenceActor:
    """One backend of the bundle, opened once on the node the actor runs on (the methods mirror
    the backend's: uint8 tiles (N, T, T, 3) in, float32 arrays out)."""

    def __init__(self, bundle: str, backend: str) -> None:
        from export.runtime import open_backend

        self.error = ""
        self.backend: Any = None
        try:
            self.backend = open_backend(bundle, name=backend)
        except (GeoaudioError, OSError) as e:
            self.error = one_line(e)
            return
        self.backend.set_streams(1, cores=assigned_cpus())  # an actor runs one call at a time, on Ray's CPU share

    def profile(self) -> dict[str, Any]:
        """The backend's name, description and heads (``PROFILE_KEYS``), where the actor runs, and
        ``error``: why the backend could not be opened ("" when it was)."""
        found: dict[str, Any] = {"error": self.error, "node": this_node()}
        if self.backend is not None:
            found.update({key: getattr(self.backend, key) for key in PROFILE_KEYS})
            found["description"] = str(self.backend.describe())
        return found

    def embed_and_score(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (N, D) and soundscape probabilities (N, K)."""
        return self.backend.embed_and_score(tiles)

    def embed_images(self, tiles: np.ndarray) -> np.ndarray:
        """Embeddings (N, D)."""
        return self.backend.embed_images(tiles)

    def segment_landcover(self, tiles: np.ndarray) -> np.ndarray:
        """Land-cover probabilities (N, K, T, T)."""
        return self.backend.segment_landcover(tiles)


def actor_shapes(nodes: Sequence[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(node id, CPUs, GPUs) of each actor to start on ``nodes`` (``geo.ray_runtime.alive_nodes``):
    one per GPU (``cpus // gpus`` CPUs each, at least 0), else one with all CPUs, else none."""
    shapes = []
    for node in nodes:
        if node["gpus"] > 0:
            shapes += [(node["id"], node["cpus"] // node["gpus"], 1)] * node["gpus"]
        elif node["cpus"] > 0:
            shapes.append((node["id"], node["cpus"], 0))
    return shapes


def start_pool(bundle: str, backend: str) -> tuple[list[Any], dict[str, Any]]:
    """Start the inference actors of :func:`actor_shapes` on the alive nodes and wait until each
    has opened its backend; returns the actor handles and the shared profile (ClusterError, one
    line, when an actor cannot open the backend or ``auto`` chose different backends on the nodes)."""
    remote = ray.remote(InferenceActor)
    actors = []
    for node_id, cpus, gpus in actor_shapes(alive_nodes()):
        where = NodeAffinitySchedulingStrategy(node_id, soft=True)  # restarts go elsewhere if the node is gone
        actors.append(remote.options(num_cpus=cpus, num_gpus=gpus, max_restarts=ACTOR_RESTARTS,
                                     max_task_retries=ACTOR_RESTARTS, scheduling_strategy=where)
                      .remote(bundle, backend))
    if not actors:
        raise ClusterError("the Ray cluster has no node with a CPU or GPU for inference actors")
    profiles = ray.get([a.profile.remote() for a in actors])
    failed = [p for p in profiles if p["error"]]
    if failed:
        stop_pool(actors)
        raise ClusterError(f"inference actor on {failed[0]['node']['node_ip']}: {failed[0]['error']}")
    names = sorted({p["name"] for p in profiles})
    if len(names) > 1:
        stop_pool(actors)
        raise ClusterError(f"--backend {backend} chose different backends on the nodes ({', '.join(names)}); "
                           f"pass --backend NAME")
    shared = {key: profiles[0][key] for key in PROFILE_KEYS}
    shared["description"] = profiles[0]["description"]
    shared["nodes"] = sorted({p["node"]["node_ip"] for p in profiles})
    return actors, shared


def stop_pool(actors: Sequence[Any]) -> None:
    """Kill the actors (no restart)."""
    for actor in actors:
        ray.kill(actor, no_restart=True)


class PoolBackend:
    """A backend whose calls run on the inference actors (see module doc); ``bundle`` is the
    bundle loaded in this process (geo.map reads its heads and image input)."""

    def __init__(self, actors: Sequence[Any], bundle: Any, profile: dict[str, Any]) -> None:
        if not actors:
            raise ClusterError("a pool backend needs at least one inference actor")
        self.actors, self.bundle, self.profile = list(actors), bundle, profile
        self.name: str = profile["name"]
        self.embedding_dim: int = profile["embedding_dim"]
        self.has_soundscape: bool = profile["has_soundscape"]
        self.soundscape_classes: list[dict[str, Any]] = profile["soundscape_classes"]
        self.has_landcover: bool = profile["has_landcover"]
        self.landcover_classes: list[dict[str, Any]] = profile["landcover_classes"]
        self._busy = [0] * len(self.actors)
        self._lock = threading.Lock()

    @property
    def concurrency(self) -> int:
        """Calls to keep in flight: ``CALLS_PER_ACTOR`` per actor."""
        return CALLS_PER_ACTOR * len(self.actors)

    def describe(self) -> str:
        """The actors' backend description and where they run."""
        return (f"{self.profile['description']}; on {len(self.actors)} Ray inference actors "
                f"({', '.join(self.profile['nodes'])})")

    def embed_and_score(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (N, D) and soundscape probabilities (N, K), computed by one actor."""
        embeddings, scores = self._call("embed_and_score", tiles)
        return np.array(embeddings), np.array(scores)

    def embed_images(self, tiles: np.ndarray) -> np.ndarray:
        """Embeddings (N, D), computed by one actor."""
        return np.array(self._call("embed_images", tiles))

    def segment_landcover(self, tiles: np.ndarray) -> np.ndarray:
        """Land-cover probabilities (N, K, T, T), computed by one actor."""
        return np.array(self._call("segment_landcover", tiles))

    def _call(self, method: str, tiles: np.ndarray) -> Any:
        """Run ``method`` on the actor with the fewest calls in flight and wait for its result
        (copied out of Ray's read-only object store by the callers)."""
        with self._lock:
            i = min(range(len(self.actors)), key=self._busy.__getitem__)
            self._busy[i] += 1
        try:
            return ray.get(getattr(self.actors[i], method).remote(tiles))
        finally:
            with self._lock:
                self._busy[i] -= 1
