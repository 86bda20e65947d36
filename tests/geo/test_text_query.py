"""Queries by text (geo.text_query, python -m geo.query --text): the TF-IDF matcher on a small
gallery table, and the command on a real map of a tiny random bundle with a written gallery."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio

from geo.map import MapOptions, map_files
from geo.query import QueryError, main, query_embeddings
from geo.text_query import DEFAULT_TOP_K, TextMatch, analyze, stem, text_query_vector
from model.bundle.files import META_FILE, WEIGHTS_FILE
from model.core.cli import run_cli
from model.core.errors import GeoaudioError
from tests.bundles import RGB
from tests.bundles import map_bundle as make_bundle

TITLES = ["Church bells in town", "Traffic by farmland", "Birdsong in woodland", "Water on lakeshore", ""]
DESCRIPTIONS = ["A bell ringing, with people talking.", "Traffic and wind.", "Birdsong and wind, with a dog barking.",
                "Waves lapping.", ""]


def _gallery(dim: int = 4, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rows = pd.DataFrame({"key": np.arange(1000, 1000 + len(TITLES)), "title": TITLES, "description": DESCRIPTIONS})
    return rows, np.random.default_rng(seed).normal(size=(len(TITLES), dim)).astype(np.float32)


def test_stemming_meets_plurals_and_verb_forms():
    assert stem("bells") == stem("bell") == "bell"
    assert stem("barking") == "bark" and stem("running") == "run" and stem("calling") == "call"
    assert stem("cities") == "city" and stem("churches") == "church" and stem("noises") == "noise"
    assert stem("glass") == "glass" and stem("bus") == "bus" and stem("thing") == "thing"
    assert analyze("The church BELLS and a dog, barking!") == ["church", "bell", "dog", "bark"]


def test_a_plural_matches_the_singular_and_stop_words_are_ignored():
    rows, z = _gallery()
    vector, used = text_query_vector(rows, z, "the bells of the church")
    assert [m.key for m in used] == [1000] and used[0].title == "Church bells in town"
    assert used[0].weight == 1.0 and 0 < used[0].score <= 1
    assert np.array_equal(vector, z[0])  # one recording: its own embedding
    # stop words alone match nothing, even though every description has "and" or "with"
    with pytest.raises(QueryError):
        text_query_vector(rows, z, "and with the of a")


def test_the_weights_follow_the_scores_and_sum_to_one():
    rows, z = _gallery()
    vector, used = text_query_vector(rows, z, "wind")
    assert sorted(m.key for m in used) == [1001, 1002]
    assert sum(m.weight for m in used) == pytest.approx(1.0)
    assert all(isinstance(m, TextMatch) for m in used)
    scores = np.array([m.score for m in used])
    assert np.allclose([m.weight for m in used], scores / scores.sum())
    assert list(scores) == sorted(scores, reverse=True)  # best first
    index = {1001: 1, 1002: 2}
    expected = sum(m.weight * z[index[m.key]].astype(np.float64) for m in used)
    assert np.allclose(vector, expected, atol=1e-6) and vector.dtype == np.float32


def test_at_most_top_k_recordings_are_used():
    rows, z = _gallery()
    _, every = text_query_vector(rows, z, "wind traffic birdsong bell")
    assert len(every) == 3 and DEFAULT_TOP_K == 10
    vector, best = text_query_vector(rows, z, "wind traffic birdsong bell", top_k=1)
    assert [m.key for m in best] == [every[0].key] and best[0].weight == 1.0
    assert np.array_equal(vector, z[best[0].key - 1000])


def test_no_match_is_one_line_naming_the_text():
    rows, z = _gallery()
    with pytest.raises(QueryError) as e:
        text_query_vector(rows, z, "thunder\n over  the sea")
    assert str(e.value) == ('no gallery recording\'s title or description matches "thunder over the sea" '
                            '(the gallery has 4 recordings with text)')
    assert isinstance(e.value, GeoaudioError)
    empty = rows.assign(title="", description=None)
    with pytest.raises(QueryError, match=r"the gallery has 0 recordings with text"):
        text_query_vector(empty, z, "bells")
    with pytest.raises(QueryError, match="empty"):
        text_query_vector(rows, z, "   ")


# ---- the command ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """A mapped scene whose bundle has a written gallery of five recordings (random embeddings)."""
    from model.bundle import load
    from model.bundle.gallery import gallery_path, gallery_stamp, write_gallery

    root = tmp_path_factory.mktemp("text-query")
    path = make_bundle(root / "bundle", gsd=600.0, landcover=False)
    [result] = map_files([RGB], path, root / "out", "torch", MapOptions(progress=False))
    assert result.status == "mapped", result.message
    bundle = load(path)
    rows, z = _gallery(dim=bundle.embedding_dim, seed=1)
    rows = rows.assign(longitude=0.0, latitude=0.0, audio_path="")
    (root / "data").mkdir()
    write_gallery(gallery_path(bundle), rows, z, gallery_stamp(bundle, root / "data", "audio"))
    return path, root / "out" / "RGB.byte" / "embeddings.tif", z


def test_a_text_matching_one_recording_maps_like_that_recording(mapped, tmp_path, capsys):
    bundle, embeddings, z = mapped
    out = tmp_path / "bells.tif"
    args = [str(embeddings), "--bundle", str(bundle), "--text", "church bells", "--out", str(out)]
    assert run_cli(lambda: main(args)) == 0
    printed = capsys.readouterr().out
    assert "key 1000" in printed and "Church bells in town" in printed and "score" in printed
    assert "key 1001" not in printed
    with rasterio.open(out) as ds:
        assert ds.count == 3 and ds.descriptions == ("similarity", "distance", "probability")
        assert ds.tags()["geoaudio_query"] == 'text "church bells"'
        heat = ds.read()
    expected, _ = query_embeddings(embeddings, z[0], "euclidean")
    assert np.allclose(heat, expected, equal_nan=True, atol=1e-6)


def test_text_top_limits_the_recordings(mapped, tmp_path, capsys):
    bundle, embeddings, _ = mapped
    out = tmp_path / "wind.tif"
    args = [str(embeddings), "--bundle", str(bundle), "--text", "wind", "--text-top", "1", "--out", str(out)]
    assert run_cli(lambda: main(args)) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("key ")]
    assert len(lines) == 1 and out.is_file()


def test_a_text_matching_nothing_exits_2_with_one_line(mapped, tmp_path, capsys):
    bundle, embeddings, _ = mapped
    out = tmp_path / "none.tif"
    code = run_cli(lambda: main([str(embeddings), "--bundle", str(bundle), "--text", "xyz", "--out", str(out)]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ('error: no gallery recording\'s title or description matches "xyz" '
                                 '(the gallery has 4 recordings with text)')
    assert not out.exists()


def test_a_bundle_without_a_gallery_cannot_be_queried_by_text(mapped, tmp_path, capsys):
    bundle, embeddings, _ = mapped
    bare = tmp_path / "bare"  # the same bundle (same content hash), without its gallery
    bare.mkdir()
    for name in (META_FILE, WEIGHTS_FILE):
        (bare / name).symlink_to(bundle / name)
    code = run_cli(lambda: main([str(embeddings), "--bundle", str(bare), "--text", "bells",
                                 "--out", str(tmp_path / "h.tif")]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {bare}: bundle has no gallery, so --text cannot be used")
    assert len(err.splitlines()) == 1 and not (tmp_path / "h.tif").exists()
