"""Gallery audio paths never leave the gallery's data folder: a gallery written by the project's
own writer with hostile ``audio_path`` values (``..``, absolute, symlinks out) loses those rows'
audio at load, with one warning, and keeps everything else."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.bundle.gallery import confined_audio_path, gallery_path, gallery_stamp, load_gallery, write_gallery
from tests.bundles import EMBED_DIM, ROBIN, tiny_bundle

GOOD = ("audio/1.ogg", "audio/sub/../2.ogg")


@pytest.fixture
def world(tmp_path):
    """A data folder with two real recordings, a secret file and a recording outside it, and
    symlinks from inside the data folder to the outside."""
    data = tmp_path / "data"
    (data / "audio").mkdir(parents=True)
    for name in ("1.ogg", "2.ogg"):
        shutil.copy(ROBIN, data / "audio" / name)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for visitors")
    shutil.copy(ROBIN, outside / "private.ogg")
    os.symlink(outside / "private.ogg", data / "audio" / "link.ogg")
    os.symlink(outside, data / "audio" / "linked_folder")
    os.symlink(data / "audio" / "1.ogg", data / "audio" / "inside_link.ogg")  # a symlink that stays inside
    return data, outside


HOSTILE = ("../outside/secret.txt", "audio/../../outside/private.ogg", "/etc/shadow", "audio/link.ogg",
           "audio/linked_folder/private.ogg", "..", "/")


def _write(bundle, data: Path, audio_paths: list[str]) -> None:
    """A gallery of ``audio_paths`` written by the project's writer, stamped for ``bundle`` and ``data``."""
    n = len(audio_paths)
    rows = pd.DataFrame({"key": np.arange(n, dtype=np.int64), "longitude": np.zeros(n), "latitude": np.zeros(n),
                         "title": [f"r{i}" for i in range(n)], "description": "", "audio_path": audio_paths})
    embeddings = np.random.default_rng(0).normal(size=(n, EMBED_DIM)).astype(np.float32)
    write_gallery(gallery_path(bundle), rows, embeddings, gallery_stamp(bundle, data, "audio"))


def test_confined_audio_path_keeps_inside_and_refuses_outside(world):
    data, outside = world
    assert confined_audio_path(data, GOOD[0]) == (data / "audio" / "1.ogg").resolve()
    assert confined_audio_path(data, GOOD[1]) == (data / "audio" / "2.ogg").resolve()
    assert confined_audio_path(data, "audio/inside_link.ogg") == (data / "audio" / "1.ogg").resolve()
    for hostile in HOSTILE + ("",):
        assert confined_audio_path(data, hostile) is None, hostile


def test_load_drops_the_audio_of_rows_that_leave_the_data_folder(tmp_path, world):
    data, _ = world
    bundle = tiny_bundle(tmp_path / "bundle")
    named = [*GOOD, *HOSTILE, ""]
    _write(bundle, data, named)
    with pytest.warns(UserWarning, match=f"{len(HOSTILE)} of {len(named)} audio paths leave the data folder"):
        rows, embeddings = load_gallery(bundle)
    assert rows["audio_path"].tolist() == [*GOOD] + [""] * (len(HOSTILE) + 1)
    assert rows.attrs["refused_audio"] == len(HOSTILE)
    assert embeddings.shape == (len(named), EMBED_DIM)  # the rows and their embeddings stay usable


def test_a_gallery_of_the_writer_loads_without_warnings(tmp_path, world):
    data, _ = world
    bundle = tiny_bundle(tmp_path / "bundle")
    _write(bundle, data, [*GOOD, ""])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, _ = load_gallery(bundle)
    assert rows["audio_path"].tolist() == [*GOOD, ""] and rows.attrs["refused_audio"] == 0


def test_the_app_serves_only_audio_files_inside_the_data_folder(tmp_path, world):
    from app.sound_query import load_gallery as app_gallery

    data, _ = world
    bundle = tiny_bundle(tmp_path / "bundle")
    _write(bundle, data, [GOOD[0], "../outside/secret.txt", "/etc/shadow"])
    with pytest.warns(UserWarning):
        gallery = app_gallery(bundle)
    assert gallery.refused == 2
    assert gallery.audio_file(0) == (data / "audio" / "1.ogg").resolve()
    assert gallery.audio_file(1) is None and gallery.audio_file(2) is None
    (data / "audio" / "1.ogg").unlink()
    os.symlink(tmp_path / "outside" / "private.ogg", data / "audio" / "1.ogg")  # swapped for a link after load
    assert gallery.audio_file(0) is None
