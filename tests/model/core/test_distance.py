"""Embedding distances (model/core/distance.py): NumPy and torch against a direct loop formula."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.core.distance import (DISTANCES, DistanceError, pairwise_distance, pairwise_distance_torch,
                                 unit_rows)
from model.core.errors import GeoaudioError


def _direct(a: np.ndarray, b: np.ndarray, distance: str) -> np.ndarray:
    """The definitions, one pair at a time: ||a - b||_2 and 1 - a.b / (|a| |b|)."""
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if distance == "euclidean":
                out[i, j] = math.sqrt(sum((float(p) - float(q)) ** 2 for p, q in zip(x, y)))
            else:
                dot = sum(float(p) * float(q) for p, q in zip(x, y))
                out[i, j] = 1.0 - dot / (math.sqrt(sum(float(p) ** 2 for p in x)) * math.sqrt(sum(float(q) ** 2 for q in y)))
    return out


@pytest.fixture
def rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)) * 3.0, rng.normal(size=(4, 5))
    b[1] = a[2]  # a coinciding pair: distance 0
    return a, b


@pytest.mark.parametrize("distance", DISTANCES)
def test_numpy_matches_the_direct_formula(rows, distance):
    a, b = rows
    got = pairwise_distance(a, b, distance)
    assert got.shape == (6, 4) and got.dtype == np.float64
    # the euclidean expansion leaves sqrt(rounding) ~ 1e-8 |a| where rows coincide
    np.testing.assert_allclose(got, _direct(a, b, distance), rtol=1e-10, atol=1e-6)
    assert got[2, 1] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("distance", DISTANCES)
def test_torch_matches_numpy_and_the_direct_formula(rows, distance):
    a, b = rows
    want = _direct(a, b, distance)
    got64 = pairwise_distance_torch(torch.from_numpy(a), torch.from_numpy(b), distance)
    assert got64.dtype == torch.float64 and tuple(got64.shape) == (6, 4)
    np.testing.assert_allclose(got64.numpy(), pairwise_distance(a, b, distance), rtol=1e-12, atol=1e-6)
    got32 = pairwise_distance_torch(torch.from_numpy(a).float(), torch.from_numpy(b).float(), distance)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), want, rtol=1e-4, atol=1e-2)  # float32: ~3e-4 |a| at d = 0


def test_cosine_ignores_length_and_puts_a_zero_row_at_distance_one():
    a = np.array([[3.0, 4.0], [0.0, 0.0]])
    b = np.array([[6.0, 8.0], [-1.0, 0.0]])
    want = [[0.0, 1.6], [1.0, 1.0]]  # 1 - (-3)/5 = 1.6; a zero row has no direction
    np.testing.assert_allclose(pairwise_distance(a, b, "cosine"), want, atol=1e-12)
    np.testing.assert_allclose(pairwise_distance_torch(torch.tensor(a), torch.tensor(b), "cosine").numpy(), want,
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(unit_rows(a), axis=1), [1.0, 0.0])


def test_torch_eps_keeps_the_gradient_finite_where_rows_coincide():
    z = torch.tensor([[0.3, -0.2, 0.1], [1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    d = pairwise_distance_torch(z, z.detach(), "euclidean", eps=1e-12)
    assert d[0, 0].item() == pytest.approx(1e-6) and d[0, 1].item() == pytest.approx(math.dist([0.3, -0.2, 0.1],
                                                                                                [1, 2, 3]))
    d.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_unknown_distance_is_a_project_error_naming_it(rows):
    a, b = rows
    for compute in (lambda: pairwise_distance(a, b, "manhattan"),
                    lambda: pairwise_distance_torch(torch.from_numpy(a), torch.from_numpy(b), "manhattan")):
        with pytest.raises(DistanceError, match="'manhattan'.*euclidean, cosine") as info:
            compute()
        assert isinstance(info.value, GeoaudioError) and isinstance(info.value, ValueError)
