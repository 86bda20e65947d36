"""--metrics reference against an independent, loop-by-loop implementation of the reference evaluation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import rankdata

from model.evaluation.reference_retrieval import average_ranks, reference_metrics


def _km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371 * math.asin(math.sqrt(min(1.0, h)))  # the reference's radius


def independent(image, audio, lon, lat, distance):
    """The reference evaluation written out with loops: embeddings through the loss's distance
    transform (unit length for cosine bundles), Euclidean D[sound, image], columns over their
    mean, scipy's average ranks, R@k as rank < k, D@k as the mean of the nearest of the top k in km."""
    n = len(image)
    if distance == "cosine":
        image = [v / math.sqrt(sum(x * x for x in v)) for v in image]
        audio = [v / math.sqrt(sum(x * x for x in v)) for v in audio]
    d = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            d[i, j] = math.dist(audio[i], image[j])
    d = d / d.mean(axis=0)
    out = {}
    for name, rows in (("image_to_audio", [d[:, j] for j in range(n)]), ("audio_to_image", [d[i] for i in range(n)])):
        ranks = np.array([rankdata(row)[q] for q, row in enumerate(rows)])
        m = {f"R@{k}": float(np.mean(ranks < k)) for k in (100, 500, 1000)}
        for k in (100, 1000):
            nearest = [min(_km(lon[q], lat[q], lon[c], lat[c]) for c in np.argsort(row, kind="stable")[:k])
                       for q, row in enumerate(rows)]
            m[f"D@{k}"] = float(np.mean(nearest))
        m["median_rank"] = float(np.median(ranks))
        out[name] = m
    return out


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_reference_metrics_equal_the_independent_implementation(distance):
    rng = np.random.default_rng(7)
    n = 240
    image = np.round(rng.normal(size=(n, 6)), 1)  # coarse values: ties in distance happen
    audio = np.round(image + rng.normal(scale=1.5, size=(n, 6)), 1)
    audio[5] = audio[6]  # two sounds at exactly the same distance from every image
    lon, lat = rng.uniform(-180, 180, n), rng.uniform(-80, 80, n)
    got = reference_metrics(image, audio, np.stack([lon, lat], axis=1), distance)
    want = independent(image, audio, lon, lat, distance)
    for direction in want:
        for key, value in want[direction].items():
            assert got[direction][key] == pytest.approx(value, rel=1e-9, abs=1e-9), (direction, key)


def test_ties_share_their_mean_rank():
    scores = np.array([[1.0, 1.0, 0.5], [2.0, 1.0, 1.0], [0.0, 3.0, 3.0]])
    assert average_ranks(scores).tolist() == [2.5, 1.5, 2.5]


def test_the_command_writes_embeddings_that_give_its_reference_figures(tmp_path):
    import json

    from model.evaluate import main
    from tests.bundles import small_pairs, tiny_bundle

    pairs = small_pairs(tmp_path / "pairs")
    bundle = tiny_bundle(tmp_path / "bundle", distance="cosine")
    out, npz = tmp_path / "ref.json", tmp_path / "emb.npz"
    assert main(["retrieval", "--bundle", str(bundle.path), "--data", str(pairs), "--split", "all", "--metrics",
                 "reference", "--out", str(out), "--embeddings-out", str(npz)]) == 0
    report = json.loads(out.read_text())
    emb = np.load(npz)
    assert set(emb.files) == {"image", "audio", "longitude", "latitude", "key"} and emb["image"].shape == (12, 8)
    want = independent(emb["image"], emb["audio"], emb["longitude"], emb["latitude"], "cosine")
    assert report["metrics"] == "reference" and report["distance"] == "cosine"
    for direction in want:
        assert set(report[direction]) == {"n", "R@100", "R@500", "R@1000", "D@100", "D@1000", "median_rank"}
        assert {k: report[direction][k] for k in want[direction]} == pytest.approx(want[direction])
    assert out.with_suffix(".csv").is_file() and not out.with_suffix(".png").exists()
