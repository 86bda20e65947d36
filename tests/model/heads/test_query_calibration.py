"""The query calibration: P(same place | distance) fitted on matched and unmatched pairs."""
from __future__ import annotations

import numpy as np
import pytest

from geo.query import calibrated_probability
from model.bundle.validation import BundleValueError, check_query_calibration
from model.heads.query_calibration import UNMATCHED_PER_IMAGE, fit_query_calibration, pair_distances


def _pairs(n: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, 16))
    return image, image + noise * rng.normal(size=(n, 16))


def test_pairs_are_one_matched_and_seeded_unmatched_draws_per_image():
    image, audio = _pairs(50, 0.1)
    d, same = pair_distances(image, audio, "euclidean", seed=3)
    assert same.sum() == 50 and len(same) == 50 * (1 + UNMATCHED_PER_IMAGE)
    assert np.allclose(d[same == 1], np.linalg.norm(image - audio, axis=1))
    again, _ = pair_distances(image, audio, "euclidean", seed=3)
    assert np.array_equal(d, again)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_close_matched_pairs_give_a_decreasing_well_separated_probability(distance):
    image, audio = _pairs(60, 0.3)
    cal = fit_query_calibration(image, audio, distance, fitted_on="val")
    assert cal["beta"] < 0 and cal["auc"] > 0.95 and cal["pairs"] == 60 and cal["prior"] == "even odds"
    d, same = pair_distances(image, audio, distance)
    p = calibrated_probability(d, cal)
    assert np.median(p[same == 1]) > 0.5 > np.median(p[same == 0])


def test_no_calibration_when_distance_says_nothing_about_places():
    image, _ = _pairs(30, 0.0)
    assert fit_query_calibration(image, -image, "cosine", "val") is None  # matched pairs are the farthest
    assert fit_query_calibration(image[:3], image[:3], "cosine", "val") is None  # too few pairs


def test_a_calibration_that_grows_with_distance_is_refused():
    check_query_calibration({"alpha": 1.0, "beta": -2.0})
    with pytest.raises(BundleValueError, match="beta"):
        check_query_calibration({"alpha": 1.0, "beta": 0.5})
