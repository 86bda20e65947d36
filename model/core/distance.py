"""Embedding distances: how a bundle compares an image embedding with an audio embedding.

A bundle names one of :data:`DISTANCES`; for rows ``a_i`` of A (N, D) and ``b_j`` of B (M, D):

- ``euclidean``: ``d(a, b) = ||a - b||_2`` (embedding units), computed as
  ``sqrt(max(|a|^2 + |b|^2 - 2 a.b, eps))`` (one matrix product, no (N, M, D) intermediate; where
  two rows coincide it gives the square root of the rounding error, about ``1e-8 |a|`` in float64
  and ``3e-4 |a|`` in float32, instead of 0);
- ``cosine``:    ``d(a, b) = 1 - a.b / (|a| |b|)`` (0 for the same direction, 2 for opposite),
  each row divided by ``max(|row|, NORM_EPS)`` first so that an all-zero row is at distance 1.

:func:`pairwise_distance` is the NumPy version (float64), :func:`pairwise_distance_torch` the same
formulas on tensors. This module imports no PyTorch: the torch version uses tensor methods and
operators only, so it runs on whatever tensors it is given (and exports to ONNX).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from model.core.errors import GeoaudioError

EUCLIDEAN = "euclidean"
COSINE = "cosine"
DISTANCES = (EUCLIDEAN, COSINE)
NORM_EPS = 1e-12  # guards the cosine normalisation of an all-zero vector


class DistanceError(GeoaudioError, ValueError):
    """A distance name that is not one of :data:`DISTANCES`."""


def check_distance(distance: str) -> str:
    """``distance`` itself when it is one of :data:`DISTANCES`; DistanceError naming it otherwise."""
    if distance not in DISTANCES:
        raise DistanceError(f"unknown distance {distance!r}: must be one of {', '.join(DISTANCES)}")
    return distance


def unit_rows(a: np.ndarray) -> np.ndarray:
    """Rows of ``a`` (N, D) scaled to unit length: ``a_i / max(||a_i||_2, NORM_EPS)`` (float64)."""
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), NORM_EPS)


def pairwise_distance(a: np.ndarray, b: np.ndarray, distance: str) -> np.ndarray:
    """(N, M) float64 distances between the rows of ``a`` (N, D) and ``b`` (M, D).

    euclidean: ``sqrt(max(|a_i|^2 + |b_j|^2 - 2 a_i.b_j, 0)) = ||a_i - b_j||_2``;
    cosine: ``1 - a_i.b_j / (|a_i| |b_j|)`` (norms floored at NORM_EPS).
    """
    check_distance(distance)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if distance == COSINE:
        return 1.0 - unit_rows(a) @ unit_rows(b).T
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def pairwise_distance_torch(a: Any, b: Any, distance: str, eps: float = 0.0) -> Any:
    """The tensor version of :func:`pairwise_distance`: a (N, D), b (M, D) -> (N, M), in a's dtype.

    euclidean: ``sqrt(max(|a_i|^2 + |b_j|^2 - 2 a_i.b_j, eps))``; a small ``eps > 0`` (the losses
    use 1e-12) keeps the gradient finite where two embeddings coincide, ``eps = 0`` gives exactly
    the NumPy formula. cosine: ``1 - a_i.b_j / (|a_i| |b_j|)`` with norms floored at NORM_EPS.
    """
    check_distance(distance)
    if distance == COSINE:
        an = a / a.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        bn = b / b.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        return 1.0 - an @ bn.T
    squared = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2.0 * (a @ b.T)
    return squared.clamp_min(eps).sqrt()
