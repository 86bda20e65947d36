"""Soundscape head: which soundscape class an image embedding is closest to.

The head holds one prototype embedding per class, ``p_k`` (K, D), and a temperature ``T > 0``.
The score of class ``k`` for an image embedding ``z`` is a softmax over negative distances::

    scores_k(z) = exp(-d(z, p_k) / T) / sum_j exp(-d(z, p_j) / T)

with ``d`` the bundle's distance:

- ``euclidean``: ``d(z, p) = ||z - p||_2`` (embedding units);
- ``cosine``:    ``d(z, p) = 1 - z.p / (||z|| ||p||)`` (0 for the same direction, 2 for opposite)

(:mod:`model.core.distance`: ``pairwise_distance_torch`` here, ``pairwise_distance`` in NumPy).

Bundle format (other parts rely on exactly this)::

    meta["heads"]["soundscape"] = {"classes": [{"name": str, "color": [r, g, b]}, ...],
                                   "temperature": float, "report": {...}}
    tensors["soundscape.prototypes"]: (K, D) float32

``scores_from_embeddings`` computes the same scores with NumPy alone.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from model.core.distance import DISTANCES, pairwise_distance, pairwise_distance_torch
from model.core.errors import GeoaudioError

HEAD = "soundscape"
PROTOTYPES = f"{HEAD}.prototypes"


class SoundscapeHeadError(GeoaudioError, ValueError):
    """A soundscape head description that cannot be used; the message says what is wrong."""


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise SoundscapeHeadError(f"soundscape head: distance must be one of {DISTANCES}, got {distance!r}")


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not np.isfinite(t) or t <= 0:
        raise SoundscapeHeadError(f"soundscape head: temperature must be a positive number, got {temperature!r}")
    return t


class SoundscapeHead(nn.Module):
    """Prototype scores: (N, D) embeddings -> (N, K) class probabilities (formula in the module doc).

    Buffers: ``prototypes`` (K, D) float32 and ``temperature`` (a 0-d float32 tensor).
    """

    def __init__(self, prototypes: Tensor | np.ndarray, temperature: float, distance: str = "euclidean") -> None:
        super().__init__()
        _check_distance(distance)
        protos = torch.as_tensor(np.asarray(prototypes, dtype=np.float32))
        if protos.ndim != 2 or protos.shape[0] < 1:
            raise SoundscapeHeadError(f"soundscape head: prototypes must be (K, D), got {tuple(protos.shape)}")
        self.distance = distance
        self.register_buffer("prototypes", protos.clone())
        self.register_buffer("temperature", torch.tensor(_check_temperature(temperature), dtype=torch.float32))

    @classmethod
    def from_bundle(cls, bundle) -> "SoundscapeHead":
        """The head of a loaded ``model.bundle.Bundle`` (SoundscapeHeadError when it has none)."""
        head = bundle.heads.get(HEAD)
        if head is None or PROTOTYPES not in bundle.tensors:
            raise SoundscapeHeadError(f"{bundle.path}: bundle has no soundscape head")
        return cls(bundle.tensors[PROTOTYPES], head["temperature"], bundle.distance)

    @property
    def num_classes(self) -> int:
        return int(self.prototypes.shape[0])

    def distances(self, z: Tensor) -> Tensor:
        """d(z_n, p_k) for every embedding and prototype: (N, D) -> (N, K)."""
        if z.ndim != 2 or z.shape[1] != self.prototypes.shape[1]:
            raise SoundscapeHeadError(f"soundscape head: embeddings must be (N, {self.prototypes.shape[1]}), got {tuple(z.shape)}")
        return pairwise_distance_torch(z, self.prototypes.to(z.dtype), self.distance)

    def forward(self, z: Tensor) -> Tensor:
        """softmax_k(-d(z, p_k) / T): (N, D) -> (N, K) probabilities."""
        return torch.softmax(-self.distances(z) / self.temperature.to(z.dtype), dim=1)


def scores_from_embeddings(z: np.ndarray, prototypes: np.ndarray, temperature: float,
                           distance: str) -> np.ndarray:
    """NumPy version of :class:`SoundscapeHead`: (N, D) embeddings -> (N, K) float32 probabilities."""
    _check_distance(distance)
    t = _check_temperature(temperature)
    z = np.asarray(z, dtype=np.float64)
    p = np.asarray(prototypes, dtype=np.float64)
    if z.ndim != 2 or p.ndim != 2 or z.shape[1] != p.shape[1]:
        raise SoundscapeHeadError(f"soundscape head: embeddings (N, D) and prototypes (K, D) do not match: "
                                  f"{z.shape} vs {p.shape}")
    logits = -pairwise_distance(z, p, distance) / t
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def soundscape_tensors(prototypes: Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """The head's bundle tensors: ``{"soundscape.prototypes": (K, D) float32}``."""
    p = prototypes.detach().cpu().numpy() if isinstance(prototypes, Tensor) else np.asarray(prototypes)
    if p.ndim != 2:
        raise SoundscapeHeadError(f"soundscape head: prototypes must be (K, D), got shape {p.shape}")
    return {PROTOTYPES: np.ascontiguousarray(p, dtype=np.float32)}


def _class_entry(c: Any) -> dict[str, Any]:
    if not isinstance(c, Mapping) or not isinstance(c.get("name"), str) or not c["name"]:
        raise SoundscapeHeadError(f"soundscape head: each class needs a non-empty 'name', got {c!r}")
    color = c.get("color")
    if (not isinstance(color, Sequence) or len(color) != 3
            or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in color)):
        raise SoundscapeHeadError(f"soundscape head: class {c['name']!r} needs a 'color' of three 0-255 ints")
    return {"name": c["name"], "color": [int(v) for v in color]}


def soundscape_meta(classes: Sequence[Mapping[str, Any]], temperature: float,
                    report: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The head's ``bundle.json`` entry (goes under ``meta["heads"]["soundscape"]``).

    classes: ``[{"name": str, "color": [r, g, b]}, ...]`` in prototype order; temperature: T > 0 in
    distance units; report: free-form figures on how the prototypes were made.
    """
    entries = [_class_entry(c) for c in classes]
    if not entries:
        raise SoundscapeHeadError("soundscape head: needs at least one class")
    names = [c["name"] for c in entries]
    if len(set(names)) != len(names):
        raise SoundscapeHeadError(f"soundscape head: class names must be unique, got {names}")
    return {"classes": entries, "temperature": _check_temperature(temperature), "report": dict(report or {})}
