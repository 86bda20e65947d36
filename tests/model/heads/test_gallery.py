"""The audio gallery: built from synthetic pairs with a tiny random bundle, rerun, queried."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.bundle import load, save
from model.core.cli import run_cli
from model.evaluation.embed import embed_folder
from model.bundle.gallery import COLUMNS, GalleryError, gallery_path, load_gallery, nearest, nearest_rows
from model.gallery import main
from model.heads.gallery import build_gallery
from tests.bundles import EMBED_DIM, N_PAIRS, small_pairs, tiny_bundle


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return small_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture
def bundle(tmp_path):
    return tiny_bundle(tmp_path / "bundle")


def test_gallery_has_every_recording_with_its_embedding(bundle, pairs):
    update = build_gallery(bundle, pairs, progress=False)
    assert (update.total, update.embedded, update.written) == (N_PAIRS, N_PAIRS, True)
    rows, z = load_gallery(bundle)
    assert list(rows.columns) == list(COLUMNS) and len(rows) == N_PAIRS and z.shape == (N_PAIRS, EMBED_DIM)
    assert z.dtype == np.float32
    assert rows.attrs["data"] == str(pairs.resolve())
    assert all((Path(rows.attrs["data"]) / p).is_file() for p in rows["audio_path"])
    expected = embed_folder(bundle, pairs, split="all", images=False, progress=False)
    order = np.argsort(expected.keys)
    assert rows["key"].tolist() == expected.keys[order].tolist()
    np.testing.assert_allclose(z, expected.audio[order], rtol=1e-5, atol=1e-5)
    assert rows["dominant"].tolist() == [expected.dominant[i] for i in order]
    schema = pq.read_schema(gallery_path(bundle)).metadata
    assert schema[b"geoaudio.bundle_hash"].decode() == bundle.content_hash()


def test_rerun_embeds_only_missing_keys(bundle, pairs, capsys):
    first = build_gallery(bundle, pairs, split="train", progress=False)
    second = build_gallery(bundle, pairs, split="all", progress=False)
    assert second.kept == first.total and second.embedded == N_PAIRS - first.total
    mtime = gallery_path(bundle).stat().st_mtime_ns
    assert main(["--bundle", str(bundle.path), "--data", str(pairs)]) == 0
    assert "embedded 0 new" in capsys.readouterr().out
    assert gallery_path(bundle).stat().st_mtime_ns == mtime


def test_new_audio_encoder_redoes_everything_new_head_does_not(bundle, pairs):
    from model.heads.soundscape import write_head
    from model.data.sound_classes import SYNTHETIC_CLASSES

    build_gallery(bundle, pairs, progress=False)
    _, before = load_gallery(bundle)
    with_head = write_head(bundle, SYNTHETIC_CLASSES, np.ones((6, EMBED_DIM), np.float32), 1.0, {})
    kept = build_gallery(with_head, pairs, progress=False)
    assert (kept.embedded, kept.kept, kept.written) == (0, N_PAIRS, True)  # re-stamped with the new hash
    assert pq.read_schema(gallery_path(with_head)).metadata[b"geoaudio.bundle_hash"].decode() == \
        with_head.content_hash()
    changed = tiny_bundle(bundle.path, audio_seed=7)
    with pytest.raises(GalleryError, match="another audio encoder"):
        load_gallery(changed)
    redone = build_gallery(changed, pairs, progress=False)
    assert (redone.embedded, redone.kept) == (N_PAIRS, 0)
    _, after = load_gallery(changed)
    assert not np.allclose(before, after)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_nearest_matches_brute_force(bundle, pairs, tmp_path, distance):
    build_gallery(bundle, pairs, progress=False)
    target = tmp_path / distance
    shutil.copytree(bundle.path, target)
    b = load(target)
    b = save(target, {**b.meta, "distance": distance}, b.tensors, overwrite=True)
    assert build_gallery(b, pairs, progress=False).embedded == 0  # same audio encoder: kept
    _, z = load_gallery(b)
    queries = np.random.default_rng(0).normal(size=(5, EMBED_DIM)).astype(np.float32) + z.mean(0)
    idx, dist = nearest(b, queries, 4)
    for q, row_idx, row_dist in zip(queries, idx, dist):
        if distance == "euclidean":
            d = np.linalg.norm(z - q, axis=1)
        else:
            d = 1 - z @ q / (np.linalg.norm(z, axis=1) * np.linalg.norm(q))
        assert row_idx.tolist() == np.argsort(d)[:4].tolist()
        np.testing.assert_allclose(row_dist, np.sort(d)[:4], rtol=1e-6, atol=1e-6)
    table = nearest_rows(b, queries, 4)
    assert table["query"].tolist() == np.repeat(np.arange(5), 4).tolist()
    assert table["rank"].tolist() == np.tile(np.arange(4), 5).tolist()
    rows, _ = load_gallery(b)
    assert table["key"].tolist() == rows["key"].to_numpy()[idx.reshape(-1)].tolist()
    assert {"title", "distance", "longitude", "latitude", "audio_path"} <= set(table.columns)


def test_bundle_without_audio_encoder_is_one_line_error(tmp_path, pairs, capsys):
    b = tiny_bundle(tmp_path / "image-only", audio=False)
    assert run_cli(lambda: main(["--bundle", str(b.path), "--data", str(pairs)])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no audio encoder" in err and "\n" not in err
    assert not gallery_path(b).exists()


def test_unreadable_pairs_are_left_out_of_the_gallery_and_of_evaluation(bundle, pairs, tmp_path):
    """A recording that does not decode is reported and left out, never replaced by another pair's."""
    data = shutil.copytree(pairs, tmp_path / "pairs")
    keys = sorted(int(p.stem) for p in (data / "spectrograms").glob("*.jpg"))
    (data / "spectrograms" / f"{keys[3]}.jpg").write_bytes(b"not a jpeg")
    update = build_gallery(bundle, data, progress=False)
    rows, _ = load_gallery(load(bundle.path))
    assert update.total == N_PAIRS - 1 and keys[3] not in set(rows["key"].astype(int))
    emb = embed_folder(bundle, data, split="all", progress=False)
    assert sorted(emb.keys.tolist()) == [k for k in keys if k != keys[3]]  # each readable pair once
    assert len(emb.image) == len(emb.audio) == N_PAIRS - 1
