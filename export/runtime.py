"""Inference backends: one interface over PyTorch, ONNX Runtime (float32, INT8, float16) and TensorRT.

    from export.runtime import open_backend
    backend = open_backend("runs/av18/bundle")          # "auto": the fastest that is usable
    emb, scores = backend.embed_and_score(tiles)        # uint8 (N, T, T, 3) -> (N, D), (N, K)
    print(backend.describe())

Backends (``name``):

- ``torch``: the bundle's weights in PyTorch, CPU or CUDA, channels-last; optional autocast
  ``precision="bf16"`` or ``"fp16"``.
- ``onnx``: ``{graph}.onnx`` in ONNX Runtime (CPU; CUDA or TensorRT execution providers when the
  installed build has them, see ``export.sessions``).
- ``onnx-int8``: ``{graph}.int8.onnx`` for the image graphs (float32 files for the rest).
- ``onnx-fp16``: ``{graph}.fp16.onnx`` (only when asked for by name).
- ``trt``: torch-tensorrt engines ``{graph}.trt.ep`` written by ``python -m export.trt`` (CUDA).
- ``null``: no inference at all, outputs of the right shapes (``export.null_backend``): measures
  what reading and writing cost (benchmarks/mapping.py's io-only run). Only by name.

``auto`` takes, in order: ``trt`` if current engines exist and CUDA and torch_tensorrt work; else
``onnx-int8`` if the INT8 image encoder exists and is current; else ``onnx`` if the float32 graphs
exist and are current; else ``torch``. *Current* means stamped with the bundle's content hash; a
stale file (the bundle changed after export) is never picked by ``auto`` and is a one-line
:class:`BackendError` when a backend is asked for by name. Without PyTorch (an edge machine with
ONNX Runtime only) ``auto`` takes an ONNX backend or fails in one line naming the bundle and how
to export it; ``torch`` asked for by name is a one-line BackendError too.

Inputs and outputs are NumPy: uint8 tiles (N, T, T, 3) at the bundle's tile size T (land cover:
the head's tile size), float32 log-mel chunks (M, 1, n_mels, chunk_frames). Work runs in batches
of ``batch_size``. This module imports no torch (nor Lightning): the ONNX backends, bundle
loading and the audio front-end run where torch is not installed. The ``torch`` and ``trt``
backends live in ``export.torch_backend``, imported only when one of them is asked for (``auto``
asks for ``trt`` first, and falls back to ``torch``).

``open_backend`` and ``available_backends`` take a bundle folder or a loaded
``model.bundle.Bundle``; pass the Bundle when you have one, so that it is not loaded and hashed
again (its content hash is computed once per Bundle object).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.manifest import HASH_KEY, onnx_name, onnx_stamp
from model.bundle.audio import QUERY_MAX_SECONDS
from model.bundle.files import ONNX_SUFFIX
from model.core.errors import GeoaudioError

if TYPE_CHECKING:
    from model.bundle import Bundle

BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-fp16", "trt")
IMAGE_GRAPHS = ("image_encoder", "image_soundscape", "landcover")
DEFAULT_BATCH = 64


class BackendError(GeoaudioError, ValueError):
    """A backend that cannot be used (missing or stale files, no CUDA ...), a missing head, or inputs of
    the wrong shape for the bundle."""


def checked_streams(streams: int | None) -> int | None:
    """``streams`` when None or >= 1; else BackendError."""
    if streams is not None and streams < 1:
        raise BackendError(f"streams must be >= 1, got {streams}")
    return streams


def graphs_of(bundle) -> list[str]:
    """The graphs a bundle has (the same rule as ``export.graphs.available_graphs``, without torch)."""
    out = []
    if bundle.has("image_encoder"):
        out.append("image_encoder")
        out += [g for g, head in (("image_soundscape", "soundscape"), ("landcover", "landcover")) if head in bundle.heads]
    if bundle.has("audio_encoder"):
        out.append("audio_encoder")
    return out


class Backend:
    """The common interface; subclasses implement :meth:`_run` for one graph and one batch.

    A backend may be called from several threads at once. ``concurrency`` is how many calls it is
    set up to serve at once (1 unless :meth:`set_streams` said otherwise); ``geo.map`` keeps that
    many in flight."""

    name = "backend"

    def __init__(self, bundle, reason: str = "") -> None:
        self.bundle = bundle
        self.reason = reason
        self.batch_size = DEFAULT_BATCH
        self.concurrency = 1
        self._opening = threading.Lock()  # graphs and sessions are opened once, by the first caller

    def set_streams(self, streams: int | None = None, cores: int | None = None) -> None:
        """Serve ``streams`` calls at once (None: this backend's default), sharing ``cores`` CPU
        cores (None: :func:`export.streams.available_cores`). This base class only records the
        number (default 1); the CPU backends also split the cores between the streams
        (:mod:`export.streams`)."""
        self.concurrency = checked_streams(streams) or 1

    def prepare(self, landcover: bool = True) -> None:
        """Open now the graphs that mapping runs (``geo.pipeline.infer``: the image encoder with the
        soundscape head when there is one, and the land-cover graph when ``landcover`` and the
        bundle has it), so that building them (PyTorch modules, ONNX Runtime sessions: seconds)
        is part of opening the backend, once per command, not of the first file's first batch."""
        graphs = ["image_soundscape" if self.has_soundscape else "image_encoder"]
        if landcover and self.has_landcover:
            graphs.append("landcover")
        for graph in graphs:
            self._prepare_graph(graph)

    def _prepare_graph(self, graph: str) -> None:
        """Build or open ``graph`` (nothing for a backend without graphs of its own)."""

    def close(self) -> None:
        """Undo what :meth:`set_streams` changed for the whole process (PyTorch's thread count);
        nothing for a backend that changed nothing. The backend may still be used afterwards."""

    def _streams_detail(self, threads: int | None) -> str:
        """", N streams x T threads" for the description (nothing for one stream of default threads)."""
        if self.concurrency == 1 and not threads:
            return ""
        streams = f"{self.concurrency} stream{'s' if self.concurrency > 1 else ''}"
        return f", {streams} x {threads} thread{'s' if threads != 1 else ''}" if threads else f", {streams}"

    # --- what the bundle offers ---------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return self.bundle.embedding_dim

    @property
    def distance(self) -> str:
        return self.bundle.distance

    @property
    def tile_size(self) -> int:
        """Pixels per tile side the image encoder expects."""
        return self.bundle.image_input.tile_size

    @property
    def landcover_tile_size(self) -> int:
        """Pixels per tile side the land-cover head expects (the image tile size if not stated)."""
        head = self.bundle.heads.get("landcover", {})
        return int(head.get("tile_size", self.tile_size))

    @property
    def has_soundscape(self) -> bool:
        return "soundscape" in self.bundle.heads

    @property
    def has_landcover(self) -> bool:
        return "landcover" in self.bundle.heads

    @property
    def has_audio(self) -> bool:
        return self.bundle.has("audio_encoder")

    @property
    def soundscape_classes(self) -> list[dict[str, Any]]:
        return list(self.bundle.heads.get("soundscape", {}).get("classes", []))

    @property
    def landcover_classes(self) -> list[dict[str, Any]]:
        return list(self.bundle.heads.get("landcover", {}).get("classes", []))

    def describe(self) -> str:
        """One line: which backend, on what, with which files, and why it was chosen."""
        why = f"; {self.reason}" if self.reason else ""
        return f"{self.name} ({self._detail()}){why}"

    def _detail(self) -> str:
        return ""

    # --- the interface ------------------------------------------------------------------------
    def embed_images(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 tiles (N, T, T, 3) -> float32 embeddings (N, D)."""
        x = self._tiles(tiles, self.tile_size)
        return self._batched("image_encoder", x, 1)[0]

    def score_soundscape(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 tiles (N, T, T, 3) -> soundscape class probabilities (N, K)."""
        return self.embed_and_score(tiles)[1]

    def embed_and_score(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 tiles -> (embeddings (N, D), soundscape probabilities (N, K)) from one encoder pass."""
        self._need("soundscape", self.has_soundscape)
        x = self._tiles(tiles, self.tile_size)
        emb, scores = self._batched("image_soundscape", x, 2)
        return emb, scores

    def segment_landcover(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 tiles (N, S, S, 3) -> land-cover class probabilities (N, K, S, S), float32."""
        self._need("landcover", self.has_landcover)
        x = self._tiles(tiles, self.landcover_tile_size)
        return self._batched("landcover", x, 1)[0]

    def embed_audio_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """float32 log-mel chunks (M, 1, n_mels, chunk_frames) -> embeddings (M, D)."""
        self._need("audio encoder", self.has_audio)
        cfg = self.bundle.audio_config
        chunks = np.asarray(chunks)
        want = (1, cfg.n_mels, cfg.chunk_frames)
        if chunks.ndim != 4 or tuple(chunks.shape[1:]) != want:
            raise BackendError(f"audio chunks must be (M, {', '.join(map(str, want))}), got {chunks.shape}")
        return self._batched("audio_encoder", np.ascontiguousarray(chunks, dtype=np.float32), 1)[0]

    def embed_audio_file(self, path: str | os.PathLike, max_seconds: float | None = QUERY_MAX_SECONDS) -> np.ndarray:
        """A recording's embedding (D,): the mean of its chunk embeddings (front-end from the bundle).
        A recording longer than ``max_seconds`` (default 10 minutes; None: no limit) is refused
        from its header (``model.bundle.audio.load_audio``)."""
        import warnings

        from model.bundle.audio import load_logmel, to_chunks

        self._need("audio encoder", self.has_audio)
        cfg = self.bundle.audio_config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a clip shorter than one chunk is padded
            chunks = to_chunks(load_logmel(path, cfg, max_seconds), cfg, source=str(path))
        return self.embed_audio_chunks(chunks).mean(axis=0)

    # --- shared plumbing ----------------------------------------------------------------------
    def _need(self, what: str, present: bool) -> None:
        if not present:
            raise BackendError(f"{self.bundle.path}: bundle has no {what}")

    def _tiles(self, tiles: np.ndarray, size: int) -> np.ndarray:
        """Validate uint8 (N, size, size, 3) tiles and normalise them to float32 (N, 3, size, size)."""
        tiles = np.asarray(tiles)
        bands = len(self.bundle.image_input.bands)
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tuple(tiles.shape[1:]) != (size, size, bands):
            raise BackendError(f"tiles must be uint8 (N, {size}, {size}, {bands}), got {tiles.dtype} {tiles.shape}")
        return self.bundle.image_input.normalise(tiles)

    def _batched(self, graph: str, x: np.ndarray, n_out: int) -> list[np.ndarray]:
        if len(x) == 0:
            probe = self._run(graph, np.zeros((1, *x.shape[1:]), np.float32))  # for the output shapes
            return [p[:0].astype(np.float32) for p in probe[:n_out]]
        parts = [self._run(graph, x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return [np.concatenate([p[k] for p in parts]).astype(np.float32, copy=False) for k in range(n_out)]

    def _run(self, graph: str, x: np.ndarray) -> list[np.ndarray]:
        """Outputs of ``graph`` for one batch of float32 inputs."""
        raise NotImplementedError


def _onnx_file(bundle, graph: str, precision: str) -> Path:
    """The file used for ``graph`` at ``precision``: INT8 only exists for image graphs (the audio
    encoder then runs in float32); a missing INT8 head graph also falls back to float32."""
    own = bundle.path / onnx_name(graph, precision)
    if precision == "int8" and (graph not in IMAGE_GRAPHS or (graph != "image_encoder" and not own.is_file())):
        return bundle.path / onnx_name(graph, "fp32")
    return own


def onnx_files(bundle, precision: str) -> dict[str, Path]:
    """graph -> ONNX file for every graph of the bundle; BackendError when one is missing or stale
    (stamped with another content hash than the bundle's)."""
    files = {g: _onnx_file(bundle, g, precision) for g in graphs_of(bundle)}
    current = bundle.content_hash()
    for graph, path in files.items():
        if not path.is_file():
            raise BackendError(f"{path}: missing; run python -m export.onnx --bundle {bundle.path}"
                               f"{' --int8 --calibration SRC' if precision == 'int8' else ''}"
                               f"{' --fp16' if precision == 'fp16' else ''}")
        made_from = onnx_stamp(path).get(HASH_KEY)
        if made_from != current:
            raise BackendError(f"{path}: stale ONNX file (made from bundle {made_from}, bundle is now {current}); "
                               f"rerun python -m export.onnx --bundle {bundle.path}")
    return files


class OnnxBackend(Backend):
    """ONNX Runtime over the exported graphs of one precision ("fp32", "int8" or "fp16")."""

    def __init__(self, bundle, precision: str = "fp32", device: str | None = None, reason: str = "",
                 threads: int | None = None) -> None:
        from export.sessions import providers_for

        super().__init__(bundle, reason)
        self.name = {"fp32": "onnx", "int8": "onnx-int8", "fp16": "onnx-fp16"}[precision]
        self.precision = precision
        self.files = onnx_files(bundle, precision)
        self.device, self.threads = device, threads
        self.providers = providers_for(device)
        self._sessions: dict[str, Any] = {}

    def _detail(self) -> str:
        files = ", ".join(p.name for p in self.files.values())
        return f"{self.providers[0]}{self._streams_detail(self.threads)}, files {files}"

    def set_streams(self, streams: int | None = None, cores: int | None = None) -> None:
        """On the CPU provider: ``streams`` calls at once (default 2 on 2+ cores), each session
        with ``cores // streams`` intra-op threads (:func:`export.streams.cpu_streams`); sessions
        already open are opened again with them. On a GPU provider: ``streams`` calls (default 1)."""
        from export.sessions import CPU
        from export.streams import cpu_streams

        if self.providers[0] != CPU:
            super().set_streams(streams, cores)
            return
        with self._opening:
            self.concurrency, self.threads = cpu_streams(checked_streams(streams), cores)
            self._sessions = {}

    def _prepare_graph(self, graph: str) -> None:
        self._open(graph)

    def _run(self, graph: str, x: np.ndarray) -> list[np.ndarray]:
        session = self._sessions.get(graph) or self._open(graph)
        return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})

    def _open(self, graph: str) -> Any:
        """The session of ``graph``, opened by the first thread that needs it."""
        from export.sessions import open_session

        with self._opening:
            if graph not in self._sessions:
                self._sessions[graph] = open_session(self.files[graph], self.device, self.threads)
            return self._sessions[graph]


def _no_onnx_message(bundle, skipped: list[str]) -> str:
    """auto without torch and without a usable ONNX export: one line naming the bundle."""
    hint = "run python -m export.onnx on a machine with PyTorch, or install torch"
    if not any(bundle.path.glob(f"*{ONNX_SUFFIX}")):
        return f"{bundle.path}: PyTorch is not installed and the bundle has no ONNX export; {hint}"
    why = "; ".join(s for s in skipped if s.startswith("not onnx"))
    return f"{bundle.path}: PyTorch is not installed and the bundle's ONNX export is not usable ({why}); {hint}"


def _auto(bundle, device: str | None) -> Backend:
    """The fastest usable backend, with the reasons for skipping the faster ones."""
    from export import torch_backend  # loads no torch by itself (see its module doc)

    skipped: list[str] = []
    if device in (None, "cuda"):
        try:
            return torch_backend.TrtBackend(bundle, reason="auto: TensorRT engines current and CUDA available")
        except BackendError as e:
            skipped.append(f"not trt ({e})")
    for precision in ("int8", "fp32"):
        try:
            backend = OnnxBackend(bundle, precision, device=device)
        except GeoaudioError as e:  # missing, stale or unreadable files
            skipped.append(f"not onnx{'-int8' if precision == 'int8' else ''} ({e})")
            continue
        backend.reason = "auto: " + "; ".join(skipped + [f"{backend.name} files current"])
        return backend
    if torch_backend.torch_missing():
        raise BackendError(_no_onnx_message(bundle, skipped))
    backend = torch_backend.TorchBackend(bundle, device=None if device in (None, "tensorrt") else device)
    backend.reason = "auto: " + "; ".join(skipped + ["torch always works"])
    return backend


def as_bundle(bundle: str | os.PathLike | Bundle) -> Bundle:
    """``bundle`` itself when it is a loaded Bundle, else the folder loaded (and validated) once."""
    from model.bundle import Bundle as Loaded, load

    return bundle if isinstance(bundle, Loaded) else load(bundle)


def open_backend(bundle: str | os.PathLike | Bundle, name: str = "auto", device: str | None = None,
                 precision: str | None = None) -> Backend:
    """Open a bundle (a folder, or a Bundle already loaded: not loaded again) with backend ``name``
    (``auto`` or one of :data:`BACKENDS`).

    device: None (best available), "cpu", "cuda" (and "tensorrt" for the ONNX backends: ONNX
    Runtime's TensorRT execution provider). precision: the torch backend's autocast ("bf16",
    "fp16"); ignored by the others. Raises BackendError (one line) for a backend that cannot be used.
    The torch and trt backends live in ``export.torch_backend``, imported only when asked for.
    """
    bundle = as_bundle(bundle)
    if name == "auto":
        return _auto(bundle, device)
    if name == "null":
        from export.null_backend import NullBackend

        return NullBackend(bundle, reason="asked for by name")
    if name in ("onnx", "onnx-int8", "onnx-fp16"):
        precision_of = {"onnx": "fp32", "onnx-int8": "int8", "onnx-fp16": "fp16"}[name]
        return OnnxBackend(bundle, precision_of, device=device, reason="asked for by name")
    if name not in ("torch", "trt"):
        raise BackendError(f"unknown backend {name!r} (known: auto, {', '.join(BACKENDS)}; null for io-only runs)")
    from export import torch_backend

    if name == "torch":
        return torch_backend.TorchBackend(bundle, device=device, precision=precision, reason="asked for by name")
    return torch_backend.TrtBackend(bundle, reason="asked for by name")


def available_backends(bundle: str | os.PathLike | Bundle) -> dict[str, str]:
    """Every backend name -> "ok" or the one-line reason it cannot be used for this bundle (a
    folder, loaded once here, or a loaded Bundle)."""
    bundle = as_bundle(bundle)
    out = {}
    for name in BACKENDS:
        try:
            open_backend(bundle, name, device="cpu" if name.startswith("onnx") else None)
            out[name] = "ok"
        except GeoaudioError as e:
            out[name] = str(e)
    return out


__all__ = ["Backend", "BackendError", "BACKENDS", "as_bundle", "open_backend", "available_backends"]
