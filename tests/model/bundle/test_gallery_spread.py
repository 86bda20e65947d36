"""How spread out a gallery's embeddings are: the mean pairwise cosine similarity and the collapse
warning the app and the demo's quality gate share (model.bundle.gallery)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model.bundle.gallery import (COLLAPSED_COSINE, collapse_warning, mean_pairwise_cosine, read_gallery_file,
                                  write_gallery)
from model.core.distance import pairwise_distance


def test_mean_pairwise_cosine_is_the_mean_over_all_pairs_of_distinct_rows():
    rows = np.random.default_rng(0).normal(size=(30, 8))
    similarity = 1.0 - pairwise_distance(rows, rows, "cosine")
    expected = (similarity.sum() - np.trace(similarity)) / (30 * 29)
    assert mean_pairwise_cosine(rows) == pytest.approx(expected, abs=1e-12)
    assert abs(mean_pairwise_cosine(rows)) < 0.1  # random directions: spread out
    opposite = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert mean_pairwise_cosine(opposite) == pytest.approx(-1.0)
    assert np.isnan(mean_pairwise_cosine(rows[:1]))


def test_a_gallery_file_of_identical_rows_trips_the_collapse_warning(tmp_path):
    path = tmp_path / "gallery.parquet"
    keys = np.arange(1000, 1012)
    table = pd.DataFrame({"key": keys, "longitude": 0.0, "latitude": 0.0, "title": "", "description": "",
                          "audio_path": ""})
    same = np.tile(np.linspace(-1.0, 1.0, 8, dtype=np.float32), (len(keys), 1))
    write_gallery(path, table, same, {"embedding_dim": "8", "distance": "cosine"})
    _, embeddings, _ = read_gallery_file(path)
    assert mean_pairwise_cosine(embeddings) == pytest.approx(1.0) and mean_pairwise_cosine(embeddings) >= COLLAPSED_COSINE
    warning = collapse_warning(embeddings)
    assert warning is not None and "collapsed" in warning and "1.0000" in warning and "\n" not in warning
    spread = np.random.default_rng(1).normal(size=same.shape).astype(np.float32)
    assert collapse_warning(spread) is None
