"""How likely is it that a map cell and a query come from the same place? Calibrating distances.

A heatmap's rank band says which cells are more alike than others, never whether any cell is
alike at all. This fits, on validation pairs of the bundle's training data, the probability that an
image and a recording were made at the same place given their embedding distance ``d`` (the
bundle's distance, :mod:`model.core.distance`):

- matched distances ``d_ii = d(z_i, a_i)`` of each validation pair's image ``z_i`` and recording
  ``a_i``, and unmatched ones ``d_ij`` (j != i; at most :data:`UNMATCHED_PER_IMAGE` seeded draws
  per image);
- logistic calibration (Platt scaling), ``p(d) = 1 / (1 + exp(-(alpha + beta * d)))``, fitted by
  scikit-learn's ``LogisticRegression`` on ``d`` with matched and unmatched pairs weighted to count
  equally: ``p`` is the probability at even prior odds (a likelihood ratio
  ``P(d | same) / P(d | other)`` of ``r`` reads as ``p = r / (1 + r)``), so p = 0.5 is the distance
  at which both are equally likely. ``beta < 0``: farther is less likely.

The result (``alpha``, ``beta``, pairs used, the ROC AUC of ``-d`` on them) is stored with the
soundscape head (``meta["heads"]["soundscape"]["query_calibration"]``, written by
``python -m model.soundscape``); ``geo.query`` applies it as the heatmap's ``probability`` band.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from model.core.distance import pairwise_distance

UNMATCHED_PER_IMAGE = 32
MIN_PAIRS = 4  # fewer validation pairs than this give no calibration


def pair_distances(image: np.ndarray, audio: np.ndarray, distance: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(distances, same place 0/1): each pair's matched distance and up to :data:`UNMATCHED_PER_IMAGE`
    unmatched ones per image, drawn without replacement by a seeded generator."""
    n = len(image)
    rng = np.random.default_rng(seed)
    d, same = [], []
    for i in range(n):
        others = np.delete(np.arange(n), i)
        if len(others) > UNMATCHED_PER_IMAGE:
            others = rng.choice(others, UNMATCHED_PER_IMAGE, replace=False)
        cols = np.r_[i, others]
        d.append(pairwise_distance(image[i:i + 1], audio[cols], distance)[0])
        same.append(np.r_[1, np.zeros(len(others), np.int64)])
    return np.concatenate(d).astype(np.float64), np.concatenate(same)


def fit_query_calibration(image: np.ndarray, audio: np.ndarray, distance: str, fitted_on: str,
                          seed: int = 0) -> dict[str, Any] | None:
    """The logistic calibration (module doc) of ``distance`` on co-located ``image`` and ``audio``
    embeddings (N, D); None with fewer than :data:`MIN_PAIRS` pairs, or when the distances do not
    separate matched from unmatched pairs (all equal, or matched pairs not closer: ``beta >= 0``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    if len(image) < MIN_PAIRS:
        return None
    d, same = pair_distances(np.asarray(image), np.asarray(audio), distance, seed)
    if np.ptp(d) == 0:
        return None
    model = LogisticRegression(C=1e4, class_weight="balanced", max_iter=1000)
    model.fit(d[:, None], same)
    if model.coef_[0, 0] >= 0:  # matched pairs are not closer: the distance says nothing about places
        return None
    return {"method": "logistic", "prior": "even odds", "alpha": float(model.intercept_[0]),
            "beta": float(model.coef_[0, 0]), "fitted_on": fitted_on, "pairs": int(len(image)),
            "unmatched": int((same == 0).sum()), "auc": float(roc_auc_score(same, -d))}
