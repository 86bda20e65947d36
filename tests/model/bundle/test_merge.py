"""``python -m model.bundle merge``: heads of bundles that share an image encoder, and refusals."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.bundle import load, save
from model.bundle.gallery import (
    gallery_path,
    gallery_stamp,
    load_gallery,
    write_gallery,
)
from model.bundle.merge import MergeError, main, merge
from model.core.cli import run_cli
from model.data.sound_classes import SYNTHETIC_CLASSES
from model.heads.soundscape import write_head
from model.nn.encoders import audio_encoder_from_bundle
from tests.bundles import EMBED_DIM, tiny_bundle

ROOT = Path(__file__).resolve().parents[3]


def with_soundscape(bundle, value: float):
    return write_head(bundle, SYNTHETIC_CLASSES, np.full((6, EMBED_DIM), value, np.float32), 0.5, {"made": value})


def with_landcover(bundle):
    meta = dict(bundle.meta)
    meta["heads"] = {**bundle.heads, "landcover": {"classes": [{"name": "water", "color": [0, 0, 255]}]}}
    tensors = {**bundle.tensors, "landcover.segmentation_head.0.weight": np.ones((1, 4, 1, 1), np.float32)}
    return save(bundle.path, meta, tensors, overwrite=True)


def with_gallery(bundle):
    rows = pd.DataFrame({"key": [1, 2], "longitude": [11.0, 11.1], "latitude": [48.0, 48.1],
                         "title": ["a", "b"], "description": ["", ""], "audio_path": ["", ""]})
    z = np.arange(2 * EMBED_DIM, dtype=np.float32).reshape(2, EMBED_DIM)
    write_gallery(gallery_path(bundle), rows, z, gallery_stamp(bundle, Path("data"), "spectrogram"))
    return bundle


def test_same_encoder_gives_union_of_heads(tmp_path):
    a = with_gallery(with_soundscape(tiny_bundle(tmp_path / "a"), 1.0))
    b = with_landcover(tiny_bundle(tmp_path / "b"))
    c = merge(a.path, b.path, tmp_path / "c")
    assert set(c.heads) == {"soundscape", "landcover"}
    np.testing.assert_array_equal(c.tensors["soundscape.prototypes"], a.tensors["soundscape.prototypes"])
    np.testing.assert_array_equal(c.tensors["landcover.segmentation_head.0.weight"], 1.0)
    assert all(np.array_equal(c.tensors[k], a.tensors[k]) for k in a.tensors if k.startswith("image_encoder."))
    rows, z = load_gallery(c)  # the gallery came along and still matches the audio encoder
    assert rows["key"].tolist() == [1, 2] and z.shape == (2, EMBED_DIM)
    assert [s["content_hash"] for s in c.meta["provenance"]["merged_from"]] == [a.content_hash(), b.content_hash()]


def test_audio_encoder_comes_from_the_bundle_that_has_one(tmp_path):
    a = with_landcover(tiny_bundle(tmp_path / "a", audio=False))
    b = with_soundscape(tiny_bundle(tmp_path / "b"), 2.0)
    c = merge(a.path, b.path, tmp_path / "c")
    assert c.has("audio_encoder") and set(c.heads) == {"soundscape", "landcover"}
    assert audio_encoder_from_bundle(c).spec == b.encoder_spec("audio_encoder")  # loads strictly


def test_same_head_needs_prefer(tmp_path):
    a = with_soundscape(tiny_bundle(tmp_path / "a"), 1.0)
    b = with_soundscape(tiny_bundle(tmp_path / "b"), 2.0)
    with pytest.raises(MergeError, match="both .* have a 'soundscape' head; pass --prefer"):
        merge(a.path, b.path, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    c = merge(a.path, b.path, tmp_path / "c", prefer="B")
    np.testing.assert_array_equal(c.tensors["soundscape.prototypes"], 2.0)
    assert c.heads["soundscape"]["report"] == {"made": 2.0}


@pytest.mark.parametrize("change, reason", [({"seed": 1}, "image encoder weights differ"),
                                            ({"audio_seed": 3}, "audio encoders differ"),
                                            ({"distance": "cosine"}, "distance differs")])
def test_incompatible_bundles_are_refused_and_nothing_is_written(tmp_path, capsys, change, reason):
    a = tiny_bundle(tmp_path / "a")
    b = with_landcover(tiny_bundle(tmp_path / "b", **change))
    before = sorted(p.name for p in tmp_path.iterdir())
    code = run_cli(lambda: main(["merge", str(a.path), str(b.path), "--out", str(tmp_path / "c")]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: cannot merge") and reason in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary folder


def test_python_m_model_bundle_merge(tmp_path):
    a = with_soundscape(tiny_bundle(tmp_path / "a"), 1.0)
    b = with_landcover(tiny_bundle(tmp_path / "b"))
    out = tmp_path / "c"
    done = subprocess.run([sys.executable, "-m", "model.bundle", "merge", str(a.path), str(b.path), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "heads landcover, soundscape" in done.stdout
    assert set(load(out).heads) == {"soundscape", "landcover"}
