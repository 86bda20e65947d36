"""python -m geo.query: heatmaps from a real map's embeddings.tif (tiny random bundle, torch backend)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import soundfile as sf

from geo.cog import is_cog
from geo.map import MapOptions, map_files
from geo.query import cell_distances, main, query_embeddings, rank_similarity
from model.core.cli import run_cli
from tests.bundles import RGB, ROOT, map_bundle as make_bundle

ROBIN = ROOT.parent / "shared" / "data" / "audio" / "robin.ogg"


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    bundle = make_bundle(root / "bundle", gsd=600.0, landcover=False)
    [result] = map_files([RGB], bundle, root / "out", "torch", MapOptions(progress=False))
    assert result.status == "mapped", result.message
    return bundle, root / "out" / "RGB.byte" / "embeddings.tif"


def _embeddings(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs


def test_a_cells_own_embedding_is_its_best_match(mapped):
    bundle, path = mapped
    emb, transform, crs = _embeddings(path)
    has = np.isfinite(emb).all(axis=0)
    r, c = np.argwhere(has)[len(np.argwhere(has)) // 2]
    heat, profile = query_embeddings(path, emb[:, r, c], "euclidean")
    assert heat.shape == (3,) + emb.shape[1:] and heat.dtype == np.float32
    assert profile["transform"] == transform and profile["crs"] == crs and profile["count"] == 3
    similarity, distance, probability = heat
    assert np.all(np.isnan(probability))  # no calibration given
    assert similarity[r, c] == 1.0 and distance[r, c] == pytest.approx(0.0, abs=1e-3)
    assert np.array_equal(np.isnan(similarity), ~has) and np.nanmin(similarity) == 0.0
    expected = np.linalg.norm(emb[:, has] - emb[:, r, c][:, None], axis=0)
    assert np.allclose(distance[has], expected, rtol=1e-4, atol=1e-3)
    # more similar (smaller distance) always means a higher score
    order = np.argsort(distance[has])
    assert np.all(np.diff(similarity[has][order]) <= 0)


def test_class_query_writes_an_aligned_heatmap(mapped, tmp_path, capsys):
    from model.bundle import load

    bundle, path = mapped
    out = tmp_path / "heat.tif"
    assert run_cli(lambda: main([str(path), "--bundle", str(bundle), "--class", "water", "--out", str(out)])) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "the bundle has no query calibration" in printed
    emb, transform, crs = _embeddings(path)
    assert is_cog(out)
    with rasterio.open(out) as ds:
        assert ds.transform == transform and ds.crs == crs and ds.shape == emb.shape[1:]
        assert ds.descriptions == ("similarity", "distance", "probability") and math.isnan(ds.nodata)
        heat = ds.read()
    proto = load(bundle).tensors["soundscape.prototypes"][2]  # "water" is class 2
    has = np.isfinite(emb).all(axis=0)
    assert np.allclose(heat[1][has], np.linalg.norm(emb[:, has] - proto[:, None], axis=0), rtol=1e-4, atol=1e-4)
    assert np.all(np.isnan(heat[:, ~has]))


def test_audio_query_uses_the_bundles_audio_encoder(mapped, tmp_path, bundle_reads):
    from export.runtime import open_backend

    bundle, path = mapped
    out = tmp_path / "robin.tif"
    assert run_cli(lambda: main([str(path), "--bundle", str(bundle), "--audio", str(ROBIN), "--out", str(out),
                                 "--backend", "torch"])) == 0
    assert bundle_reads == {"load": 1, "hash": 1}  # the query and its backend share one loaded bundle
    vector = open_backend(bundle, name="torch").embed_audio_file(ROBIN)
    expected, _ = query_embeddings(path, vector, "euclidean")
    with rasterio.open(out) as ds:
        assert np.allclose(ds.read(), expected, equal_nan=True, atol=1e-5)


def test_a_clip_over_the_audio_limit_is_one_line_and_writes_nothing(mapped, tmp_path, capsys):
    bundle, path = mapped
    long_clip = tmp_path / "quarter_hour.flac"
    click = np.zeros(8000 * 900, np.int16)
    click[100] = 8000
    sf.write(str(long_clip), click, 8000, format="FLAC", subtype="PCM_16")  # 15 min, default limit 10 min
    out = tmp_path / "heat.tif"
    for clip, extra, limits in ((long_clip, [], "lasts 0:15:00, more than the limit of 0:10:00"),
                                (ROBIN, ["--max-audio-seconds", "2"], "lasts 0:00:03, more than the limit of 0:00:02")):
        code = run_cli(lambda: main([str(path), "--bundle", str(bundle), "--audio", str(clip), "--out", str(out),
                                     "--backend", "torch", *extra]))
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == f"error: {clip}: the recording {limits} (h:mm:ss)"
    assert not out.exists()


def test_unknown_class_is_a_one_line_error(mapped, tmp_path, capsys):
    bundle, path = mapped
    out = tmp_path / "heat.tif"
    code = run_cli(lambda: main([str(path), "--bundle", str(bundle), "--class", "thunder", "--out", str(out)]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: unknown sound class 'thunder'") and "birds" in err
    assert not any(tmp_path.iterdir())


def test_embeddings_of_another_bundle_are_refused(mapped, tmp_path, capsys):
    _, path = mapped
    other = make_bundle(tmp_path / "other", gsd=600.0, landcover=False, dim=8)
    code = run_cli(lambda: main([str(path), "--bundle", str(other), "--class", "birds", "--out", str(tmp_path / "h.tif")]))
    err = capsys.readouterr().err
    assert code == 2 and "made with bundle" in err and not (tmp_path / "h.tif").exists()


def test_distances_and_ranks_follow_their_formulas():
    z = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, -2.0], [3.0, 4.0]], np.float32)
    v = np.array([0.0, 1.0], np.float32)
    assert np.allclose(cell_distances(z, v, "euclidean"), [math.hypot(3, 3), 0, 3, math.hypot(3, 3)], atol=1e-6)
    assert np.allclose(cell_distances(z, v, "cosine"), [1 - 0.8, 0, 2, 1 - 0.8], atol=1e-6)
    # ranks 0, 1, (2+3)/2 tied: similarity 1 - rank / 3
    assert np.allclose(rank_similarity(np.array([0.0, 1.0, 5.0, 5.0])), [1, 2 / 3, 1 / 6, 1 / 6])
    assert rank_similarity(np.array([2.0])).tolist() == [1.0]


def test_the_probability_band_applies_the_bundles_calibration(mapped):
    from geo.query import answer, calibrated_probability

    _, path = mapped
    emb, _, _ = _embeddings(path)
    has = np.isfinite(emb).all(axis=0)
    r, c = np.argwhere(has)[0]
    calibration = {"alpha": 1.5, "beta": -0.75}
    heat, _ = query_embeddings(path, emb[:, r, c], "euclidean", calibration)
    d = heat[1][has].astype(np.float64)
    assert np.allclose(heat[2][has], 1.0 / (1.0 + np.exp(-(1.5 - 0.75 * d))), atol=1e-6)
    assert heat[2][r, c] == pytest.approx(1.0 / (1.0 + math.exp(-1.5)), abs=1e-3)  # its own cell, d = 0
    assert np.all(np.isnan(heat[2][~has]))
    assert calibrated_probability(np.array([1e6, -1e6]), calibration).tolist() == [0.0, 1.0]  # no overflow
    assert answer(np.array([[0.2, 0.7], [0.9, np.nan]])) == (
        "2 of 3 cells (66.7 %) are more likely than not from the same place (p >= 0.5); highest 0.90")
    assert answer(np.array([0.1, 0.3])).startswith("no place in this map sounds like this: the highest "
                                                   "probability of the same place is 0.30")
