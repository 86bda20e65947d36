"""Cross-modal retrieval metrics: Recall@k, median rank, and distance to the nearest retrieved place.

For N paired rows (query i belongs with gallery item i) and a distance matrix D (N x N, queries
in rows), the rank of query i is ``1 + #{j : D[i, j] < D[i, i]}`` (ties count in the query's
favour). Recall@k is the share of queries with rank <= k; the median rank is the median over
queries. ``km@k`` follows the SoundingEarth paper: for each query, the great-circle distance in
kilometres from the query's location to the nearest of the locations of its top-k retrieved
items; we report the median over queries. The distance matrix itself is
:func:`model.core.distance.pairwise_distance`.

How the paper's evaluation differs (``--metrics reference``,
:mod:`model.evaluation.reference_retrieval`): each image's distances are divided by their mean over
the sounds, ties are averaged rather than counted in the query's favour, ``R@k`` counts ranks
below k (at 100, 500, 1000), ``D@k`` is the mean rather than the median km, and a cosine bundle is
compared by the Euclidean distance of unit vectors.
"""
from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0088


def ranks(dist: np.ndarray) -> np.ndarray:
    """1-based rank of the true match (the diagonal) in each row of a square distance matrix."""
    diag = np.diagonal(dist)[:, None]
    return 1 + (dist < diag).sum(axis=1)


def haversine_km(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle distance in km: 2 R asin(sqrt(sin^2(dlat/2) + cos lat1 cos lat2 sin^2(dlon/2)))."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lon1, lat1, lon2, lat2))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def nearest_retrieved_km(dist: np.ndarray, locations: np.ndarray, k: int) -> np.ndarray:
    """Per query: km from its location to the nearest location among its top-k retrieved items."""
    k = min(k, dist.shape[1])
    top = np.argsort(dist, axis=1, kind="stable")[:, :k]
    lon, lat = locations[:, 0], locations[:, 1]
    km = haversine_km(lon[:, None], lat[:, None], lon[top], lat[top])
    return km.min(axis=1)


def retrieval_metrics(dist: np.ndarray, locations: np.ndarray | None = None,
                      ks: tuple[int, ...] = (1, 10, 100), km_ks: tuple[int, ...] = (10, 100)) -> dict[str, float]:
    """Recall@k, median rank and km@k for one direction (queries in rows of ``dist``)."""
    r = ranks(dist)
    out: dict[str, float] = {"n": int(len(r))}
    for k in ks:
        out[f"recall@{k}"] = float((r <= k).mean())
    out["median_rank"] = float(np.median(r))
    if locations is not None:
        for k in km_ks:
            out[f"km@{k}"] = float(np.median(nearest_retrieved_km(dist, locations, k)))
    return out


def recall_curve(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, Recall@k) for k = 1..N."""
    r = ranks(dist)
    k = np.arange(1, dist.shape[1] + 1)
    return k, np.searchsorted(np.sort(r), k, side="right") / len(r)
