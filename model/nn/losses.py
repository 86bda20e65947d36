"""Losses that pull co-located image and audio embeddings together.

Every loss is called as `loss(z_img, z_audio)` on N >= 2 paired rows (row i of both is one place)
and returns a scalar. Its class attribute `distance` ("euclidean" or "cosine") is how embeddings
of a model trained with it are compared at retrieval time; the bundle records it.

Distances: D[i, j] = ||z_img_i - z_audio_j||_2, computed by `model.core.distance.pairwise_distance_torch`
as sqrt(max(|a|^2 + |b|^2 - 2 a.b, eps)) (one matrix product, no (N, N, d) intermediate) with
eps = SQUARED_DISTANCE_EPS, so that gradients stay finite (zero) when two embeddings coincide.

Distributed training gathers embeddings before calling a loss (see model/nn/gather.py); the losses
themselves are local.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.core.distance import COSINE, EUCLIDEAN, pairwise_distance_torch

SQUARED_DISTANCE_EPS = 1e-12


def pairwise_euclidean(a: Tensor, b: Tensor) -> Tensor:
    """D[i, j] = sqrt(max(||a_i - b_j||^2, SQUARED_DISTANCE_EPS)) for a (N, d), b (M, d) -> (N, M)."""
    return pairwise_distance_torch(a, b, EUCLIDEAN, eps=SQUARED_DISTANCE_EPS)


def rowwise_euclidean(a: Tensor, b: Tensor, eps: float = SQUARED_DISTANCE_EPS) -> Tensor:
    """d[i] = sqrt(max(||a_i - b_i||^2, eps)) for a, b (N, d) -> (N,)."""
    return (a - b).pow(2).sum(1).clamp_min(eps).sqrt()


def _check_pairs(z_img: Tensor, z_audio: Tensor, name: str) -> None:
    """Raise ValueError unless both are (N, d) with the same N >= 2 and d."""
    if z_img.ndim != 2 or z_img.shape != z_audio.shape or z_img.shape[0] < 2:
        raise ValueError(
            f"{name}: needs two (N, d) embedding batches of equal shape with N >= 2, "
            f"got {tuple(z_img.shape)} and {tuple(z_audio.shape)}"
        )


def _off_diagonal_mean(m: Tensor) -> Tensor:
    """Mean of the N * (N - 1) entries m[i, j] with i != j of a square matrix."""
    n = m.shape[0]
    return (m.sum() - m.diagonal().sum()) / (n * (n - 1))


def triplet_hinges(z_img: Tensor, z_audio: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """The (N, N) hinge terms of every triplet of a batch of N pairs, D = ``pairwise_euclidean``:
    ``audio_anchor[i, j] = relu(D[j, j] - D[i, j] + m)`` (audio j anchors, image i the negative) and
    ``image_anchor[i, j] = relu(D[i, i] - D[i, j] + m)`` (image i anchors, audio j the negative)."""
    d = pairwise_euclidean(z_img, z_audio)
    positive = d.diagonal()
    return F.relu(positive.unsqueeze(0) - d + margin), F.relu(positive.unsqueeze(1) - d + margin)


class BatchAllTripletLoss(nn.Module):
    """Triplet loss over every negative of the batch, in both directions.

    With D[i, j] = ||z_img_i - z_audio_j||_2 and margin m:
        L = 1/2 * ( mean_{i != j} relu(D[j, j] - D[i, j] + m)     (audio j anchors, images i negatives)
                  + mean_{i != j} relu(D[i, i] - D[i, j] + m) )   (image i anchors, audio j negatives)
    """

    distance = EUCLIDEAN

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, z_img: Tensor, z_audio: Tensor) -> Tensor:
        _check_pairs(z_img, z_audio, type(self).__name__)
        audio_anchor, image_anchor = triplet_hinges(z_img, z_audio, self.margin)
        return 0.5 * (_off_diagonal_mean(audio_anchor) + _off_diagonal_mean(image_anchor))


class PublishedBatchAllTripletLoss(nn.Module):
    """The batch-all triplet loss as the SoundingEarth reference code computes it (``--loss
    batch_all_reference``; also the benchmark baseline).

    The reference (khdlr/SoundingEarth ``lib/loss_functions.py``, ``TripletLoss``, the default
    ``LossFunction`` of ``config.py``) builds D[i, j] = ||img_i - snd_j||_2 by broadcasting, takes
    d_true = diag(D) and returns 0.5 * (d1 + d2) with
    d1 = mean(relu(d_true[None, :] - D + 1)) (entry [i, j]: D[j, j] - D[i, j], audio j anchors, image i
    the negative) and d2 = mean(relu(d_true[:, None] - D + 1)) (D[i, i] - D[i, j], image i anchors),
    both means over all N x N entries. So with margin m (the reference's is fixed at 1.0):
        L = 1/2 * ( mean_{i, j} relu(D[j, j] - D[i, j] + m) + mean_{i, j} relu(D[i, i] - D[i, j] + m) )
    the same terms as BatchAllTripletLoss, diagonal included. Each diagonal term is relu(m) = m
    (for m >= 0), so
        L = (N - 1) / N * BatchAllTripletLoss + m / N:
    a constant offset m/N and gradients scaled by (N - 1)/N. Distances use `pairwise_euclidean`
    (the reference took the norm of the difference, whose gradient is undefined at zero distance;
    the values agree up to float rounding above sqrt(SQUARED_DISTANCE_EPS) = 1e-6).
    """

    distance = EUCLIDEAN

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, z_img: Tensor, z_audio: Tensor) -> Tensor:
        _check_pairs(z_img, z_audio, type(self).__name__)
        audio_anchor, image_anchor = triplet_hinges(z_img, z_audio, self.margin)
        return 0.5 * (audio_anchor.mean() + image_anchor.mean())


class NaiveTripletLoss(nn.Module):
    """Triplet loss with one negative per image anchor: the audio of the next row.

        L = mean_i relu(D[i, i] - D[i, (i + 1) mod N] + m),  D[i, j] = ||z_img_i - z_audio_j||_2
    """

    distance = EUCLIDEAN

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, z_img: Tensor, z_audio: Tensor) -> Tensor:
        _check_pairs(z_img, z_audio, type(self).__name__)
        positive = rowwise_euclidean(z_img, z_audio)
        negative = rowwise_euclidean(z_img, torch.roll(z_audio, shifts=-1, dims=0))
        return F.relu(positive - negative + self.margin).mean()


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE on cosine similarities with temperature tau.

    With u_i = z_img_i / ||z_img_i||, v_j = z_audio_j / ||z_audio_j|| and S[i, j] = u_i . v_j / tau:
        L = CE(S, diagonal) + CE(S^T, diagonal)
          = mean_i -log softmax_j(S[i, :])[i] + mean_j -log softmax_i(S[:, j])[j]
    (the sum of the two directions, not their average).
    """

    distance = COSINE

    def __init__(self, tau: float = 0.2) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"ContrastiveLoss: tau must be positive, got {tau}")
        self.tau = tau

    def forward(self, z_img: Tensor, z_audio: Tensor) -> Tensor:
        _check_pairs(z_img, z_audio, type(self).__name__)
        s = F.normalize(z_img, dim=1) @ F.normalize(z_audio, dim=1).T / self.tau
        target = torch.arange(s.shape[0], device=s.device)
        return F.cross_entropy(s, target) + F.cross_entropy(s.T, target)


LOSSES: dict[str, type[nn.Module]] = {
    "batch_all_triplet": BatchAllTripletLoss,
    "naive_triplet": NaiveTripletLoss,
    "contrastive": ContrastiveLoss,
    "batch_all_reference": PublishedBatchAllTripletLoss,
    "published_batch_all_triplet": PublishedBatchAllTripletLoss,  # its earlier name
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """The loss registered as `name` in LOSSES, built with `kwargs` (margin=..., tau=...)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})")
    try:
        return LOSSES[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"loss {name!r}: bad arguments {sorted(kwargs)}: {exc}") from None
