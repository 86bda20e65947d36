"""Retrieval metrics as the SoundingEarth reference evaluation computes them (``--metrics reference``).

For N pairs with image embeddings ``z_j`` and audio embeddings ``a_i`` (row i and column i belong
together):

1. ``D[i, j] = ||t(a_i) - t(z_j)||_2``, sounds in rows and images in columns, where ``t`` is the
   loss's distance transform: the identity for triplet-trained (``euclidean``) bundles, L2
   normalisation for contrastive (``cosine``) ones, so their D is ``sqrt(2 - 2 cos)``, not our
   ``1 - cos`` (the same order within a column, but not once columns are normalised);
2. each image's column is divided by its mean over the sounds, ``D[i, j] <- D[i, j] / mean_i D[i, j]``
   (a hub image, close to every sound, is not favoured);
3. image -> audio ranks the sounds of column j, audio -> image the images of row i; the rank of
   the true match is 1-based with ties averaged: ``rank = 1 + #{smaller} + #{equal, others} / 2``;
4. ``R@k`` is the share of queries whose rank is **below** k (``rank < k``; k = 100, 500, 1000);
   ``median_rank`` the median over queries;
5. ``km@k`` of a query is the smallest great-circle distance (kilometres, on a sphere of radius
   6371 km) from its place to the places of its k nearest matches in that ranking (stable order
   on ties), and ``D@k`` the mean of ``km@k`` over queries (k = 100, 1000).

Source: ``lib/evaluation.py`` (``evaluate``) and the ``distance_transform`` methods of
``lib/loss_functions.py`` in khdlr/SoundingEarth.

How our default metrics (:mod:`model.evaluation.retrieval`) differ: no column normalisation; rank
``1 + #{smaller}`` (ties in the query's favour); ``Recall@k`` counts ``rank <= k`` at k = 1, 10,
100; ``km@k`` is reported as the median over queries, not the mean, with the mean Earth radius
6371.0088 km.
"""
from __future__ import annotations

import numpy as np

from model.core.distance import COSINE, pairwise_distance, unit_rows
from model.evaluation.retrieval import EARTH_RADIUS_KM, haversine_km

REFERENCE_EARTH_RADIUS_KM = 6371.0

RECALL_KS = (100, 500, 1000)
DISTANCE_KS = (100, 1000)
DIRECTIONS = ("image_to_audio", "audio_to_image")


def reference_matrix(image: np.ndarray, audio: np.ndarray, distance: str) -> np.ndarray:
    """``D`` (N sounds x N images), float64, each image's column divided by its mean (steps 1-2)."""
    image, audio = (np.asarray(x, np.float64) for x in (image, audio))
    if distance == COSINE:
        image, audio = unit_rows(image), unit_rows(audio)
    d = pairwise_distance(audio, image, "euclidean").astype(np.float64)
    mean = d.mean(axis=0, keepdims=True)
    return d / np.where(mean == 0, 1.0, mean)


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Per row of a square matrix (queries in rows, candidates in columns, smaller = better), the
    1-based rank of the diagonal entry with ties averaged (step 3)."""
    true = np.diagonal(scores)[:, None]
    smaller = (scores < true).sum(axis=1)
    equal_others = (scores == true).sum(axis=1) - 1
    return 1.0 + smaller + equal_others / 2.0


def nearest_match_km(scores: np.ndarray, locations: np.ndarray, k: int) -> np.ndarray:
    """Per query (row): km from its place to the nearest place among its ``k`` best-ranked
    candidates (stable order on ties)."""
    top = np.argsort(scores, axis=1, kind="stable")[:, :min(k, scores.shape[1])]
    lon, lat = locations[:, 0], locations[:, 1]
    km = haversine_km(lon[:, None], lat[:, None], lon[top], lat[top])
    return (km * (REFERENCE_EARTH_RADIUS_KM / EARTH_RADIUS_KM)).min(axis=1)


def direction_metrics(scores: np.ndarray, locations: np.ndarray | None) -> dict[str, float]:
    """``R@k``, ``D@k`` and ``median_rank`` for queries in the rows of ``scores`` (steps 3-5)."""
    r = average_ranks(scores)
    out: dict[str, float] = {"n": int(len(r))}
    for k in RECALL_KS:
        out[f"R@{k}"] = float((r < k).mean())
    if locations is not None:
        for k in DISTANCE_KS:
            out[f"D@{k}"] = float(nearest_match_km(scores, locations, k).mean())
    out["median_rank"] = float(np.median(r))
    return out


def reference_metrics(image: np.ndarray, audio: np.ndarray, locations: np.ndarray | None,
                      distance: str) -> dict[str, dict[str, float]]:
    """``{"image_to_audio": {...}, "audio_to_image": {...}}`` as the module doc defines them;
    ``locations`` (N, 2) longitude, latitude in degrees (None: no ``D@k``)."""
    d = reference_matrix(image, audio, distance)
    return {"image_to_audio": direction_metrics(d.T, locations),  # image j's column, as a row
            "audio_to_image": direction_metrics(d, locations)}
