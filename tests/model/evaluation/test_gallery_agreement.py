"""Class agreement of each image's nearest gallery recordings, its own recording left out."""
from __future__ import annotations

import numpy as np
import pytest

from model.evaluation.gallery_agreement import GalleryAgreementError, class_agreement

# five recordings on a line: keys 10..14 at x = 0, 1, 2, 10, 11
GALLERY = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [10.0, 0.0], [11.0, 0.0]], dtype=np.float32)
KEYS = [10, 11, 12, 13, 14]
CLASSES = ["urban", "urban", "forest", "water", "water"]


def test_own_recording_is_left_out_and_top_k_counts_every_neighbour():
    # query key 10 sits on its own recording: without it, the nearest are 11 (urban), 12 (forest)
    # query key 13 (water) at x = 10: nearest others 14 (water), 12 (forest)
    queries = np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    result = class_agreement(GALLERY, KEYS, CLASSES, queries, [10, 13], ["urban", "water"], "euclidean", k=2)
    assert result["top1"] == 1.0
    assert result["topk"] == pytest.approx(0.5)  # one of two neighbours agrees, for both queries
    assert (result["n"], result["k"]) == (2, 2)
    assert result["majority_share"] == 0.5


def test_wrong_neighbours_and_majority_baseline():
    queries = np.array([[2.0, 0.0], [2.1, 0.0], [2.2, 0.0]], dtype=np.float32)
    result = class_agreement(GALLERY, KEYS, CLASSES, queries, [12, 99, 98], ["water", "forest", "forest"],
                             "euclidean", k=1)
    # key 12 left out for the first query (nearest other: 11, urban, wrong); the others hit 12 (forest)
    assert result["top1"] == pytest.approx(2 / 3)
    assert (result["majority_class"], result["majority_share"]) == ("forest", pytest.approx(2 / 3))


def test_missing_classes_and_tiny_galleries_are_refused():
    queries = np.zeros((1, 2), dtype=np.float32)
    with pytest.raises(GalleryAgreementError, match="dominant class"):
        class_agreement(GALLERY, KEYS, CLASSES, queries, [1], [""], "euclidean")
    with pytest.raises(GalleryAgreementError, match="more than k = 5"):
        class_agreement(GALLERY, KEYS, CLASSES, queries, [1], ["urban"], "euclidean", k=5)
