"""The uncertainty of a cell's soundscape scores: their normalised entropy.

For class probabilities ``p_1..p_K`` (summing to 1)

    H = -sum_k p_k ln p_k / ln K        (0 ln 0 = 0)

lies in 0..1: 0 when one class has all the probability (certain), 1 when all K classes are
equally likely. With a single class (K = 1) there is nothing to choose and H = 0. A cell whose
scores are NaN (no data) has H = NaN. ``soundscape_scores.tif`` stores it as its last band,
``uncertainty``, after the K score bands.
"""
from __future__ import annotations

import numpy as np

UNCERTAINTY = "uncertainty"  # band description of the uncertainty band in soundscape_scores.tif


def normalised_entropy(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """``H`` (see the module doc) of probabilities ``scores`` along ``axis`` (the K classes), as
    float32 in 0..1; NaN where any score along ``axis`` is NaN."""
    p = np.asarray(scores, dtype=np.float64)
    k = p.shape[axis]
    positive = p > 0
    terms = np.where(positive, p * np.log(np.where(positive, p, 1.0)), 0.0)
    h = -terms.sum(axis=axis) / np.log(k) if k > 1 else np.zeros(np.delete(p.shape, axis % p.ndim))
    h = np.where(np.isnan(p).any(axis=axis), np.nan, np.clip(h, 0.0, 1.0) + 0.0)  # + 0.0: no -0.0
    return h.astype(np.float32)
