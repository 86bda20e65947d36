"""Tests for model/nn/losses.py against direct loop-based implementations of each formula."""

from __future__ import annotations

import math

import pytest
import torch

from model.nn.losses import (
    LOSSES,
    BatchAllTripletLoss,
    ContrastiveLoss,
    NaiveTripletLoss,
    PublishedBatchAllTripletLoss,
    build_loss,
    pairwise_euclidean,
)

SIZES = [2, 3, 5, 8]


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(sum((a[k] - b[k]) ** 2 for k in range(a.shape[0])))


def _relu(v: torch.Tensor) -> torch.Tensor:
    return v if v > 0 else v * 0


def ref_batch_all(zi, za, m, include_diagonal=False):
    n = zi.shape[0]
    d = [[_dist(zi[i], za[j]) for j in range(n)] for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(n) if include_diagonal or i != j]
    cols = sum(_relu(d[j][j] - d[i][j] + m) for i, j in pairs) / len(pairs)
    rows = sum(_relu(d[i][i] - d[i][j] + m) for i, j in pairs) / len(pairs)
    return 0.5 * (cols + rows)


def ref_naive(zi, za, m):
    n = zi.shape[0]
    return sum(_relu(_dist(zi[i], za[i]) - _dist(zi[i], za[(i + 1) % n]) + m) for i in range(n)) / n


def ref_contrastive(zi, za, tau):
    n = zi.shape[0]
    u = [zi[i] / torch.sqrt((zi[i] ** 2).sum()) for i in range(n)]
    v = [za[j] / torch.sqrt((za[j] ** 2).sum()) for j in range(n)]
    s = [[(u[i] * v[j]).sum() / tau for j in range(n)] for i in range(n)]
    row = sum(-s[i][i] + torch.log(sum(torch.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    col = sum(-s[j][j] + torch.log(sum(torch.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return row + col


CASES = [
    (BatchAllTripletLoss(margin=1.0), lambda zi, za: ref_batch_all(zi, za, 1.0)),
    (NaiveTripletLoss(margin=0.7), lambda zi, za: ref_naive(zi, za, 0.7)),
    (ContrastiveLoss(tau=0.2), lambda zi, za: ref_contrastive(zi, za, 0.2)),
    (PublishedBatchAllTripletLoss(margin=1.0), lambda zi, za: ref_batch_all(zi, za, 1.0, include_diagonal=True)),
]


def _pair(n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # scale 0.4 in 4 dimensions keeps distances near the margin, so some hinge terms are active
    zi = (torch.randn(n, 4, generator=g, dtype=dtype) * 0.4).requires_grad_()
    za = (torch.randn(n, 4, generator=g, dtype=dtype) * 0.4).requires_grad_()
    return zi, za


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("loss", "reference"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_loss_and_gradients_match_loop_reference(loss, reference, n):
    for seed in range(3):
        zi, za = _pair(n, seed)
        value = loss(zi, za)
        grads = torch.autograd.grad(value, (zi, za))
        ref_value = reference(zi, za)
        ref_grads = torch.autograd.grad(ref_value, (zi, za))
        assert value.ndim == 0
        torch.testing.assert_close(value, ref_value, rtol=1e-6, atol=1e-9)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n", SIZES)
def test_float32_matches_float64(n):
    zi, za = _pair(n, 11)
    for loss, _ in CASES:
        torch.testing.assert_close(loss(zi.float(), za.float()).double(), loss(zi, za), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", SIZES)
def test_published_form_is_rescaled_batch_all(n):
    zi, za = _pair(n, 5)
    m = 0.5
    published = PublishedBatchAllTripletLoss(m)(zi, za)
    expected = (n - 1) / n * BatchAllTripletLoss(m)(zi, za) + m / n
    torch.testing.assert_close(published, expected)


@pytest.mark.parametrize(("loss", "_"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_gradients_finite_when_embeddings_coincide(loss, _):
    z = torch.tensor([[0.3, -0.2, 0.1]] * 4)
    zi = z.clone().requires_grad_()
    za = z.clone().requires_grad_()
    loss(zi, za).backward()
    assert torch.isfinite(zi.grad).all() and torch.isfinite(za.grad).all()
    assert pairwise_euclidean(z, z).max() < 1e-5


def test_losses_reward_aligned_pairs():
    z = torch.eye(4) * 3.0  # rows 4.2 apart, further than any margin used here
    shuffled = z[[3, 0, 1, 2]]  # audio i+1 now belongs to image i
    for name in ("batch_all_triplet", "naive_triplet"):
        loss = build_loss(name, margin=1.0)
        assert loss(z, z).item() == pytest.approx(0.0, abs=1e-5)
        assert loss(z, shuffled).item() > 1.0
    contrastive = build_loss("contrastive")
    # aligned: cosine 1 on the diagonal, 0 elsewhere, so each CE is log(1 + 3 exp(-1 / tau))
    assert contrastive(z, z).item() == pytest.approx(2 * math.log(1 + 3 * math.exp(-5.0)), rel=1e-5)
    assert contrastive(z, shuffled).item() > 5.0


def test_distance_attribute_and_registry():
    assert BatchAllTripletLoss.distance == "euclidean"
    assert NaiveTripletLoss.distance == "euclidean"
    assert PublishedBatchAllTripletLoss.distance == "euclidean"
    assert ContrastiveLoss.distance == "cosine"
    assert {"batch_all_triplet", "naive_triplet", "contrastive"} <= set(LOSSES)
    loss = build_loss("batch_all_triplet", margin=0.25)
    assert isinstance(loss, BatchAllTripletLoss) and loss.margin == 0.25
    assert build_loss("contrastive", tau=0.07).tau == 0.07


@pytest.mark.parametrize(("name", "kwargs"), [("triplet", {}), ("contrastive", {"margin": 1.0})])
def test_build_loss_errors_are_one_line(name, kwargs):
    with pytest.raises(ValueError) as info:
        build_loss(name, **kwargs)
    assert name in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("loss", [c[0] for c in CASES])
def test_bad_batches_are_rejected(loss):
    with pytest.raises(ValueError, match="N >= 2"):
        loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="equal shape"):
        loss(torch.randn(3, 4), torch.randn(2, 4))


def ref_soundingearth_triplet(zi, za):
    """The reference's TripletLoss (khdlr/SoundingEarth lib/loss_functions.py) term by term:
    D[i][j] = ||img_i - snd_j||; d1 averages relu(D[j][j] - D[i][j] + 1) (d_true as a row), d2
    averages relu(D[i][i] - D[i][j] + 1) (d_true as a column), both over all N * N entries."""
    n = zi.shape[0]
    d = [[_dist(zi[i], za[j]) for j in range(n)] for i in range(n)]
    d1 = sum(_relu(d[j][j] - d[i][j] + 1.0) for i in range(n) for j in range(n)) / (n * n)
    d2 = sum(_relu(d[i][i] - d[i][j] + 1.0) for i in range(n) for j in range(n)) / (n * n)
    return 0.5 * (d1 + d2)


@pytest.mark.parametrize("n", SIZES)
def test_batch_all_reference_is_the_reference_triplet_loss(n):
    loss = build_loss("batch_all_reference")
    assert isinstance(loss, PublishedBatchAllTripletLoss) and loss.margin == 1.0 and loss.distance == "euclidean"
    zi, za = _pair(n, 21)
    value = loss(zi, za)
    want = ref_soundingearth_triplet(zi, za)
    torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-9)
    for got, expected in zip(torch.autograd.grad(value, (zi, za)), torch.autograd.grad(want, (zi, za))):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    # the only difference from ours: the N diagonal terms, relu(1) = 1 each, join the mean
    ours = BatchAllTripletLoss(1.0)(zi, za)
    torch.testing.assert_close(value - ours, (1.0 - ours) / n)
    # aligned pairs far apart: ours reaches 0, the reference's keeps the diagonal's 1 / N
    z = torch.eye(n, dtype=torch.float64) * 3.0
    assert loss(z, z).item() == pytest.approx(1.0 / n) and BatchAllTripletLoss(1.0)(z, z).item() == pytest.approx(0.0)
