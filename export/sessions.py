"""ONNX Runtime sessions: open one with the right execution providers, run it in batches.

Execution providers by ``device``: ``None`` (auto) uses CUDA when the installed onnxruntime build
has it, else the CPU; ``"cpu"``; ``"cuda"``; ``"tensorrt"`` (TensorRT EP, then CUDA, then CPU for
what it cannot take). The CPU build on PyPI (``onnxruntime``) has only the CPU provider;
``onnxruntime-gpu`` adds CUDA and TensorRT.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from model.core.errors import GeoaudioError, one_line

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
DEVICES = (None, "cpu", "cuda", "tensorrt")


class SessionError(GeoaudioError, ValueError):
    """An ONNX file or device that ONNX Runtime cannot use; the message names it."""


def providers_for(device: str | None) -> list[str]:
    """The execution providers to ask for, in priority order (see the module doc)."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    if device not in DEVICES:
        raise SessionError(f"device must be one of {DEVICES[1:]} or None, got {device!r}")
    if device == "cpu":
        return [CPU]
    if device == "cuda" and CUDA not in have:
        raise SessionError("device 'cuda': this onnxruntime build has no CUDAExecutionProvider "
                           "(pip install onnxruntime-gpu on a CUDA machine)")
    if device == "tensorrt" and TENSORRT not in have:
        raise SessionError("device 'tensorrt': this onnxruntime build has no TensorrtExecutionProvider")
    wanted = {"cuda": [CUDA, CPU], "tensorrt": [TENSORRT, CUDA, CPU], None: [CUDA, CPU]}[device]
    return [p for p in wanted if p in have]


def open_session(path: str | os.PathLike, device: str | None = "cpu", threads: int | None = None,
                 spin: bool = False):
    """An ``onnxruntime.InferenceSession`` with all graph optimisations; ``threads`` intra-op threads
    (ONNX Runtime's default, one per core, when None).

    ``spin``: let idle worker threads busy-wait for the next task. Off by default: on small shared
    machines (and beside the tile-reading threads of ``geo.map``) spinning threads take CPU time
    from the work itself; measured on a busy 2-core machine, INT8 ran about 15 % faster without it.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise SessionError(f"{path}: no such ONNX file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), options, providers=providers_for(device))
    except SessionError:
        raise
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
        raise SessionError(f"{path}: ONNX Runtime cannot load it ({one_line(e)})") from None


def run_batched(session, x: np.ndarray, batch_size: int = 64,
                output_names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Run a one-input session over ``x`` in batches; returns each output concatenated over batches."""
    name = session.get_inputs()[0].name
    names = list(output_names) if output_names else [o.name for o in session.get_outputs()]
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for i in range(0, len(x), batch_size):
        outs = session.run(names, {name: np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)})
        for store, out in zip(parts, outs):
            store.append(out)
    return [np.concatenate(p) for p in parts]
