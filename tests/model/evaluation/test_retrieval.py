"""Retrieval metrics against direct definitions."""
from __future__ import annotations

import numpy as np
import pytest

from model.evaluation.retrieval import haversine_km, nearest_retrieved_km, ranks, recall_curve, retrieval_metrics


def test_ranks_and_recall_on_a_known_matrix():
    d = np.array([[0.1, 0.5, 0.9],
                  [0.2, 0.3, 0.1],
                  [0.0, 0.4, 0.8]])
    np.testing.assert_array_equal(ranks(d), [1, 3, 3])
    m = retrieval_metrics(d, ks=(1, 2))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(1 / 3)
    assert m["median_rank"] == 3
    k, r = recall_curve(d)
    np.testing.assert_allclose(r, [1 / 3, 1 / 3, 1.0])


def test_haversine_known_distances():
    # one degree of latitude is about 111.2 km; Paris - London about 344 km
    assert haversine_km(0, 0, 0, 1) == pytest.approx(111.19, rel=1e-3)
    assert haversine_km(2.3522, 48.8566, -0.1276, 51.5072) == pytest.approx(343.5, rel=5e-3)


def test_nearest_retrieved_km_uses_the_closest_of_the_top_k():
    loc = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    d = np.array([[5.0, 1.0, 2.0],   # query 0 retrieves 1 then 2
                  [0.0, 1.0, 2.0],
                  [0.0, 1.0, 2.0]])
    km1 = nearest_retrieved_km(d, loc, 1)
    km2 = nearest_retrieved_km(d, loc, 2)
    assert km1[0] == pytest.approx(111.19, rel=1e-3)  # location of item 1
    assert km2[1] == pytest.approx(0.0, abs=1e-9) or km2[1] == pytest.approx(111.19, rel=1e-3)
    assert km2[2] == pytest.approx(111.19, rel=1e-3)  # items 0 and 1: item 1 is one degree away
