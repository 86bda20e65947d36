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

``auto`` takes, in order: ``trt`` if current engines exist and CUDA and torch_tensorrt work; else
``onnx-int8`` if the INT8 image encoder exists and is current; else ``onnx`` if the float32 graphs
exist and are current; else ``torch``. *Current* means stamped with the bundle's content hash; a
stale file (the bundle changed after export) is never picked by ``auto`` and is a one-line
:class:`BackendError` when a backend is asked for by name. Without PyTorch (an edge machine with
ONNX Runtime only) ``auto`` takes an ONNX backend or fails in one line naming the bundle and how
to export it; ``torch`` asked for by name is a one-line BackendError too.

Inputs and outputs are NumPy: uint8 tiles (N, T, T, 3) at the bundle's tile size T (land cover:
the head's tile size), float32 log-mel chunks (M, 1, n_mels, chunk_frames). Work runs in batches
of ``batch_size``. Nothing here imports Lightning; the ONNX backends, bundle loading and the
audio front-end do not import torch, so they run where torch is not installed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from export.manifest import (HASH_KEY, TRT_MANIFEST, onnx_name, onnx_stamp, read_manifest,
                             trt_name)

BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-fp16", "trt")
IMAGE_GRAPHS = ("image_encoder", "image_soundscape", "landcover")
DEFAULT_BATCH = 64


class BackendError(ValueError):
    """A backend that cannot be used (missing or stale files, no CUDA ...), or a missing head."""


def torch_missing() -> str | None:
    """Why PyTorch cannot be imported here (one line), or None when it can.

    Tries the import itself: ``importlib.util.find_spec`` says nothing of a broken install, and
    every torch backend needs the import anyway.
    """
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"PyTorch is not importable ({_first_line(e)})"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _graphs_of(bundle) -> list[str]:
    """The graphs a bundle has (the same rule as ``export.graphs.available_graphs``, without torch)."""
    out = []
    if bundle.has("image_encoder"):
        out.append("image_encoder")
        out += [g for g, head in (("image_soundscape", "soundscape"), ("landcover", "landcover")) if head in bundle.heads]
    if bundle.has("audio_encoder"):
        out.append("audio_encoder")
    return out


class Backend:
    """The common interface; subclasses implement :meth:`_run` for one graph and one batch."""

    name = "backend"

    def __init__(self, bundle, reason: str = "") -> None:
        self.bundle = bundle
        self.reason = reason
        self.batch_size = DEFAULT_BATCH

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
            raise ValueError(f"audio chunks must be (M, {', '.join(map(str, want))}), got {chunks.shape}")
        return self._batched("audio_encoder", np.ascontiguousarray(chunks, dtype=np.float32), 1)[0]

    def embed_audio_file(self, path: str | os.PathLike) -> np.ndarray:
        """A recording's embedding (D,): the mean of its chunk embeddings (front-end from the bundle)."""
        import warnings

        from model.bundle.audio import load_logmel, to_chunks

        self._need("audio encoder", self.has_audio)
        cfg = self.bundle.audio_config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a clip shorter than one chunk is padded
            chunks = to_chunks(load_logmel(path, cfg), cfg, source=str(path))
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
            raise ValueError(f"tiles must be uint8 (N, {size}, {size}, {bands}), got {tiles.dtype} {tiles.shape}")
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


class TorchBackend(Backend):
    """PyTorch eager: modules from ``export.graphs``, channels-last, optional autocast precision."""

    name = "torch"
    PRECISIONS = (None, "fp32", "bf16", "fp16")

    def __init__(self, bundle, device: str | None = None, precision: str | None = None, reason: str = "") -> None:
        why = torch_missing()
        if why:
            raise BackendError(f"torch backend: {why}; install torch, or use --backend onnx / onnx-int8 "
                               f"after python -m export.onnx --bundle {bundle.path} on a machine with PyTorch")
        import torch

        super().__init__(bundle, reason)
        if precision not in self.PRECISIONS:
            raise BackendError(f"torch precision must be one of {self.PRECISIONS[1:]}, got {precision!r}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device != "cpu" and not device.startswith("cuda"):
            raise BackendError(f"torch backend: device must be 'cpu' or 'cuda[:N]', got {device!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("device 'cuda' asked for, but torch sees no CUDA GPU")
        self.device = torch.device(device)
        self.precision = None if precision == "fp32" else precision
        self._modules: dict[str, Any] = {}

    def _detail(self) -> str:
        return f"{self.device}, {self.precision or 'fp32'}, channels-last"

    def _module(self, graph: str):
        import torch

        from export.graphs import build_graph

        if graph not in self._modules:
            module = build_graph(self.bundle, graph).to(self.device)
            self._modules[graph] = module.to(memory_format=torch.channels_last)
        return self._modules[graph]

    def _run(self, graph: str, x: np.ndarray) -> list[np.ndarray]:
        import torch

        module = self._module(graph)
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision or "")
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = module(t)
        outs = out if isinstance(out, tuple) else (out,)
        return [o.float().cpu().numpy() for o in outs]


def _onnx_file(bundle, graph: str, precision: str) -> Path:
    """The file used for ``graph`` at ``precision``: INT8 only exists for image graphs (the audio
    encoder then runs in float32); a missing INT8 head graph also falls back to float32."""
    own = bundle.path / onnx_name(graph, precision)
    if precision == "int8" and (graph not in IMAGE_GRAPHS or (graph != "image_encoder" and not own.is_file())):
        return bundle.path / onnx_name(graph, "fp32")
    return own


def onnx_files(bundle, precision: str, current: str | None = None) -> dict[str, Path]:
    """graph -> ONNX file for every graph of the bundle; BackendError when one is missing or stale
    (``current``: the bundle's content hash, computed when not given)."""
    files = {g: _onnx_file(bundle, g, precision) for g in _graphs_of(bundle)}
    current = current or bundle.content_hash()
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
                 threads: int | None = None, current: str | None = None) -> None:
        from export.sessions import providers_for

        super().__init__(bundle, reason)
        self.name = {"fp32": "onnx", "int8": "onnx-int8", "fp16": "onnx-fp16"}[precision]
        self.precision = precision
        self.files = onnx_files(bundle, precision, current)
        self.device, self.threads = device, threads
        self.providers = providers_for(device)
        self._sessions: dict[str, Any] = {}

    def _detail(self) -> str:
        files = ", ".join(p.name for p in self.files.values())
        return f"{self.providers[0]}, files {files}"

    def _run(self, graph: str, x: np.ndarray) -> list[np.ndarray]:
        from export.sessions import open_session

        if graph not in self._sessions:
            self._sessions[graph] = open_session(self.files[graph], self.device, self.threads)
        session = self._sessions[graph]
        return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})


def trt_unavailable() -> str | None:
    """Why TensorRT engines cannot be built or run here (one line), or None when CUDA and
    torch_tensorrt both work."""
    from importlib.util import find_spec

    missing = []
    has_trt = find_spec("torch_tensorrt") is not None
    if not has_trt:
        missing.append("torch_tensorrt is not installed")
    if torch_missing():
        missing.append("torch is not installed")
    else:
        import torch

        if not torch.cuda.is_available():
            missing.append("no CUDA GPU is visible to torch")
    if not missing and has_trt:
        try:
            import torch_tensorrt  # noqa: F401
        except Exception as e:  # noqa: BLE001 - a broken install raises anything
            missing.append(f"torch_tensorrt does not import ({str(e).strip().splitlines()[0] if str(e) else type(e).__name__})")
    if not missing:
        return None
    return f"TensorRT needs a CUDA GPU and torch_tensorrt: {' and '.join(missing)}; on a CUDA machine run pip install 'geoaudio[trt]'"


def trt_files(bundle, current: str | None = None) -> dict[str, Path]:
    """graph -> engine file from ``trt.json``; BackendError when missing or stale."""
    manifest = read_manifest(bundle.path, TRT_MANIFEST)
    hint = f"run python -m export.trt --bundle {bundle.path} on a CUDA machine"
    if manifest is None:
        raise BackendError(f"{bundle.path / TRT_MANIFEST}: missing; {hint}")
    current = current or bundle.content_hash()
    if manifest.get("bundle_hash") != current:
        raise BackendError(f"{bundle.path / TRT_MANIFEST}: stale engines (made from bundle "
                           f"{manifest.get('bundle_hash')}, bundle is now {current}); {hint}")
    files = {g: bundle.path / trt_name(g) for g in _graphs_of(bundle)}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise BackendError(f"{bundle.path}: TensorRT engines missing: {', '.join(missing)}; {hint}")
    return files


class TrtBackend(Backend):
    """torch-tensorrt engines saved by ``export.trt`` (CUDA only)."""

    name = "trt"

    def __init__(self, bundle, reason: str = "", current: str | None = None) -> None:
        super().__init__(bundle, reason)
        self.files = trt_files(bundle, current)
        why = trt_unavailable()
        if why:
            raise BackendError(f"trt backend: {why}")
        self._modules: dict[str, Any] = {}

    def _detail(self) -> str:
        return f"cuda, files {', '.join(p.name for p in self.files.values())}"

    def _run(self, graph: str, x: np.ndarray) -> list[np.ndarray]:
        import torch
        import torch_tensorrt

        if graph not in self._modules:
            self._modules[graph] = torch_tensorrt.load(str(self.files[graph])).module()
        with torch.inference_mode():
            out = self._modules[graph](torch.from_numpy(np.ascontiguousarray(x)).cuda())
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in outs]


def _no_onnx_message(bundle, skipped: list[str]) -> str:
    """auto without torch and without a usable ONNX export: one line naming the bundle."""
    hint = "run python -m export.onnx on a machine with PyTorch, or install torch"
    if not any(bundle.path.glob("*.onnx")):
        return f"{bundle.path}: PyTorch is not installed and the bundle has no ONNX export; {hint}"
    why = "; ".join(s for s in skipped if s.startswith("not onnx"))
    return f"{bundle.path}: PyTorch is not installed and the bundle's ONNX export is not usable ({why}); {hint}"


def _auto(bundle, device: str | None) -> Backend:
    """The fastest usable backend, with the reasons for skipping the faster ones."""
    skipped: list[str] = []
    current = bundle.content_hash()
    if device in (None, "cuda"):
        try:
            return TrtBackend(bundle, reason="auto: TensorRT engines current and CUDA available", current=current)
        except BackendError as e:
            skipped.append(f"not trt ({e})")
    for precision in ("int8", "fp32"):
        try:
            backend = OnnxBackend(bundle, precision, device=device, current=current)
        except (BackendError, ValueError) as e:
            skipped.append(f"not onnx{'-int8' if precision == 'int8' else ''} ({e})")
            continue
        backend.reason = "auto: " + "; ".join(skipped + [f"{backend.name} files current"])
        return backend
    if torch_missing():
        raise BackendError(_no_onnx_message(bundle, skipped))
    backend = TorchBackend(bundle, device=None if device in (None, "tensorrt") else device)
    backend.reason = "auto: " + "; ".join(skipped + ["torch always works"])
    return backend


def open_backend(bundle_dir: str | os.PathLike, name: str = "auto", device: str | None = None,
                 precision: str | None = None) -> Backend:
    """Open a bundle with backend ``name`` (``auto`` or one of :data:`BACKENDS`).

    device: None (best available), "cpu", "cuda" (and "tensorrt" for the ONNX backends: ONNX
    Runtime's TensorRT execution provider). precision: the torch backend's autocast ("bf16",
    "fp16"); ignored by the others. Raises BackendError (one line) for a backend that cannot be used.
    """
    from model.bundle import load

    bundle = load(bundle_dir)
    if name == "auto":
        return _auto(bundle, device)
    if name == "torch":
        return TorchBackend(bundle, device=device, precision=precision, reason="asked for by name")
    if name in ("onnx", "onnx-int8", "onnx-fp16"):
        precision_of = {"onnx": "fp32", "onnx-int8": "int8", "onnx-fp16": "fp16"}[name]
        return OnnxBackend(bundle, precision_of, device=device, reason="asked for by name")
    if name == "trt":
        return TrtBackend(bundle, reason="asked for by name")
    raise BackendError(f"unknown backend {name!r} (known: auto, {', '.join(BACKENDS)})")


def available_backends(bundle_dir: str | os.PathLike) -> dict[str, str]:
    """Every backend name -> "ok" or the one-line reason it cannot be used for this bundle."""
    out = {}
    for name in BACKENDS:
        try:
            open_backend(bundle_dir, name, device="cpu" if name.startswith("onnx") else None)
            out[name] = "ok"
        except (BackendError, ValueError) as e:
            out[name] = str(e)
    return out


__all__ = ["Backend", "BackendError", "BACKENDS", "open_backend", "available_backends", "torch_missing"]
