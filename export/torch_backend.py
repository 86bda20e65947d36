"""The backends that run on PyTorch: ``torch`` (eager) and ``trt`` (torch-tensorrt engines).

``export.runtime`` loads this module only when one of them is asked for (by name, by ``auto``, or
by ``available_backends``); that one edge is named in the import contract's ``ignore_imports``
(pyproject.toml), so the ONNX path stays torch-free. The module itself imports without PyTorch
(torch, torch_tensorrt and ``export.graphs`` are imported inside the functions that need them),
so on an edge machine ``auto`` can still ask :func:`torch_missing` why the torch backend is out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.manifest import read_manifest, trt_name
from export.runtime import Backend, BackendError, checked_streams, graphs_of
from model.bundle.files import TRT_MANIFEST
from model.core.errors import one_line


def torch_missing() -> str | None:
    """Why PyTorch cannot be imported here (one line), or None when it can.

    Tries the import itself: ``importlib.util.find_spec`` says nothing of a broken install, and
    every torch backend needs the import anyway.
    """
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"PyTorch is not importable ({one_line(e)})"
    return None


def skip_gpu_compiler() -> None:
    """Keep Triton (the GPU kernel compiler that CUDA builds of PyTorch bring along) from loading in a
    process that runs PyTorch on the CPU: torchvision's import reaches ``torch._dynamo``, which
    imports Triton when it is installed, and its library alone adds about 75 MB to the resident
    memory of every CPU mapping run for nothing (docs/performance.md). PyTorch treats Triton as
    optional; nothing here compiles. Without effect when Triton is already imported."""
    import sys

    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError


class TorchBackend(Backend):
    """PyTorch eager: modules from ``export.graphs`` holding the bundle's own weight arrays (no
    copies: ``model.nn.encoders.bundle_state``), channels-last inputs, optional autocast precision."""

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
        if self.device.type == "cpu" and not torch.cuda.is_available():
            skip_gpu_compiler()
        self.precision = None if precision == "fp32" else precision
        self.threads: int | None = None  # per stream, once set_streams has run on the CPU
        self._threads_before: int | None = None  # the process's thread count set_streams changed
        self._modules: dict[str, Any] = {}

    def _detail(self) -> str:
        return f"{self.device}, {self.precision or 'fp32'}, channels-last{self._streams_detail(self.threads)}"

    def set_streams(self, streams: int | None = None, cores: int | None = None) -> None:
        """On the CPU: ``streams`` calls at once (default 2 on 2+ cores) with ``cores // streams``
        threads each (:func:`export.streams.cpu_streams`). PyTorch has one thread count per
        process, so this sets ``torch.set_num_threads`` for the whole process. On CUDA: ``streams``
        calls (default 1)."""
        import torch

        from export.streams import cpu_streams

        if self.device.type != "cpu":
            super().set_streams(streams, cores)
            return
        self.concurrency, self.threads = cpu_streams(checked_streams(streams), cores)
        if self._threads_before is None:
            self._threads_before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def close(self) -> None:
        """PyTorch's thread count back to what it was before :meth:`set_streams`."""
        import torch

        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def _prepare_graph(self, graph: str) -> None:
        self._module(graph)

    def _module(self, graph: str):
        module = self._modules.get(graph)
        if module is None:
            with self._opening:  # built once, by the first thread that needs it
                module = self._modules.get(graph) or self._build(graph)
                self._modules[graph] = module
        return module

    def _build(self, graph: str):
        import torch

        from export.graphs import build_graph

        if self.device.type == "cpu":  # weights stay the bundle's arrays, shared by the graphs
            return build_graph(self.bundle, graph, share=True)
        module = build_graph(self.bundle, graph).to(self.device)
        return module.to(memory_format=torch.channels_last)

    def _run(self, graph: str, x: np.ndarray) -> list[np.ndarray]:
        import torch

        module = self._module(graph)
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision or "")
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = module(t)
        outs = out if isinstance(out, tuple) else (out,)
        return [o.float().cpu().numpy() for o in outs]


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
            missing.append(f"torch_tensorrt does not import ({one_line(e)})")
    if not missing:
        return None
    return f"TensorRT needs a CUDA GPU and torch_tensorrt: {' and '.join(missing)}; on a CUDA machine run pip install 'geoaudio[trt]'"


def trt_files(bundle) -> dict[str, Path]:
    """graph -> engine file from ``trt.json``; BackendError when missing or stale (made from
    another content hash than the bundle's)."""
    manifest = read_manifest(bundle.path, TRT_MANIFEST)
    hint = f"run python -m export.trt --bundle {bundle.path} on a CUDA machine"
    if manifest is None:
        raise BackendError(f"{bundle.path / TRT_MANIFEST}: missing; {hint}")
    current = bundle.content_hash()
    if manifest.get("bundle_hash") != current:
        raise BackendError(f"{bundle.path / TRT_MANIFEST}: stale engines (made from bundle "
                           f"{manifest.get('bundle_hash')}, bundle is now {current}); {hint}")
    files = {g: bundle.path / trt_name(g) for g in graphs_of(bundle)}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise BackendError(f"{bundle.path}: TensorRT engines missing: {', '.join(missing)}; {hint}")
    return files


class TrtBackend(Backend):
    """torch-tensorrt engines saved by ``export.trt`` (CUDA only)."""

    name = "trt"

    def __init__(self, bundle, reason: str = "") -> None:
        super().__init__(bundle, reason)
        self.files = trt_files(bundle)
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


__all__ = ["TorchBackend", "TrtBackend", "torch_missing", "trt_files", "trt_unavailable"]
