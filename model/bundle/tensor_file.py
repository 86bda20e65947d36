"""The tensors of a bundle's ``weights.safetensors``, each read from the file on first use.

A bundle holds every part's weights (image encoder, audio encoder, heads), but most uses need
only some: mapping with ONNX needs none of them, mapping with PyTorch never the audio encoder
(about 43 MB of a resnet18). :class:`TensorFile` opens the file once (safetensors checks its
header and that every tensor lies inside the file), lists names and shapes from the header, and
copies a tensor into memory only when it is asked for; it then keeps that array, so every user
of the Bundle shares one copy. Reading is safe from several threads.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np


class TensorShape:
    """A stand-in with only ``.shape``, for checks that need no values (``infer_spec``)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


class TensorFile(Mapping[str, np.ndarray]):
    """Read-only mapping name -> NumPy array over one safetensors file (module doc).

    Raises safetensors' ``SafetensorError`` (or OSError) at construction when the file is not a
    valid safetensors file; the caller words it (``model.bundle.format.load``)."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        self._file: Any = safe_open(str(self.path), framework="numpy")
        self._names = dict.fromkeys(self._file.keys())  # ordered, O(1) membership
        self._loaded: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name`` from the header, without reading it (KeyError if absent)."""
        if name not in self._names:
            raise KeyError(name)
        return tuple(self._file.get_slice(name).get_shape())

    def shapes(self) -> dict[str, TensorShape]:
        """name -> :class:`TensorShape` for every tensor, read from the header alone."""
        return {name: TensorShape(self.shape(name)) for name in self._names}

    @property
    def read(self) -> list[str]:
        """Names of the tensors read into memory so far."""
        return list(self._loaded)

    def __getitem__(self, name: str) -> np.ndarray:
        found = self._loaded.get(name)
        if found is not None:
            return found
        if name not in self._names:
            raise KeyError(name)
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._file.get_tensor(name)
            return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"TensorFile({str(self.path)!r}, {len(self._names)} tensors, {len(self._loaded)} read)"


def shapes_of(tensors: Mapping[str, Any]) -> Mapping[str, Any]:
    """Shape stand-ins of a :class:`TensorFile` (header only), or ``tensors`` itself (arrays in memory)."""
    return tensors.shapes() if isinstance(tensors, TensorFile) else tensors
