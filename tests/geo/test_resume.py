"""A geo.map run that is killed (SIGKILL) or interrupted (Ctrl-C) resumes from its last checkpoint.

Real interruptions of a real ``python -m geo.map`` child on a generated synthetic scene; the
resumed products must equal those of an uninterrupted run, and tiles.gpkg must hold every tile
exactly once.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from geo.journal import JOURNAL
from geo.map import MapOptions, map_files
from tests.bundles import map_bundle as make_bundle

ROOT = Path(__file__).resolve().parents[2]
TILE, GSD, BATCH, SIZE = 64, 0.5, 4, 512  # 8 x 8 tiles, 16 x 16 with stride 32
PRODUCTS = ("embeddings.tif", "soundscape.tif", "soundscape_scores.tif", "landcover.tif")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    from model.synth.scene import write_scene

    return write_scene(tmp_path_factory.mktemp("scene"), size=SIZE, gsd=GSD, seed=3, cell=64.0,
                       progress=False)["scene"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", gsd=GSD, landcover=True, tile_size=TILE)


def _options(stride: int | None) -> MapOptions:
    return MapOptions(stride=stride, batch=BATCH, progress=False)


def _reference(scene: Path, bundle: Path, out: Path, stride: int | None) -> Path:
    [result] = map_files([scene], bundle, out, "torch", _options(stride))
    assert result.status == "mapped", result.message
    return out / scene.stem


def _interrupt(scene: Path, bundle: Path, out: Path, stride: int | None, sig: int, rows: int) -> Path:
    """Start geo.map in a child, send ``sig`` once its journal says ``rows`` cell rows are final."""
    cmd = [sys.executable, "-m", "geo.map", str(scene), "--bundle", str(bundle), "--out", str(out),
           "--backend", "torch", "--batch", str(BATCH), "--checkpoint-every", "0", "--no-progress"]
    if stride:
        cmd += ["--stride", str(stride)]
    # a shell running pytest in the background hands SIGINT down ignored: give Ctrl-C back to the child
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    journal = out / scene.stem / ".partial" / JOURNAL
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if json.loads(journal.read_text())["rows_done"] >= rows:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    assert child.poll() is None, f"geo.map ended before it could be interrupted: {child.stderr.read()}"
    os.kill(child.pid, sig)
    child.communicate(timeout=60)
    assert child.returncode != 0
    folder = out / scene.stem
    assert not (folder / "run.json").exists() and (folder / ".partial" / JOURNAL).is_file()
    assert not any((folder / p).exists() for p in PRODUCTS)  # nothing published by the killed run
    return folder


def _same_products(resumed: Path, reference: Path) -> None:
    for name in PRODUCTS:
        with rasterio.open(resumed / name) as a, rasterio.open(reference / name) as b:
            assert a.transform == b.transform and a.shape == b.shape
            x, y = a.read(), b.read()
        if x.dtype == np.uint8:  # class rasters: batch composition may flip rare near-ties
            assert np.mean(x == y) >= 0.999, name
        else:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4, err_msg=name)
    tiles = gpd.read_file(resumed / "tiles.gpkg")
    reference_tiles = gpd.read_file(reference / "tiles.gpkg")
    assert len(tiles) == len(reference_tiles)
    assert not tiles.duplicated(["row", "col"]).any()
    assert set(zip(tiles.row, tiles.col)) == set(zip(reference_tiles.row, reference_tiles.col))


@pytest.mark.parametrize("stride, sig", [(None, signal.SIGKILL), (32, signal.SIGINT)],
                         ids=["no-overlap-sigkill", "overlap-ctrl-c"])
def test_interrupted_run_resumes_where_it_stopped(scene, bundle, tmp_path, stride, sig):
    reference = _reference(scene, bundle, tmp_path / "reference", stride)
    folder = _interrupt(scene, bundle, tmp_path / "out", stride, sig, rows=2)
    rows_done = json.loads((folder / ".partial" / JOURNAL).read_text())["rows_done"]
    cols = SIZE // (stride or TILE)
    seen: list[tuple[str, int, int]] = []
    options = MapOptions(stride=stride, batch=BATCH, progress=False, on_progress=lambda *p: seen.append(p))
    [result] = map_files([scene], bundle, tmp_path / "out", "torch", options)
    assert result.status == "mapped", result.message
    info = json.loads((folder / "run.json").read_text())
    # progress starts at the tiles already done and ends at the whole grid
    assert seen[0] == (str(scene), info["resumed_at_tile"], cols * cols) and seen[-1][1] == cols * cols
    # the resumed run starts at the checkpoint (minus the rows a blended land cover needs again)
    replay = 0 if stride is None else TILE // stride - 1
    assert info["resumed_at_tile"] == (rows_done - replay) * cols > 0
    assert info["timings"]["tiles"] == cols * cols - info["resumed_at_tile"]
    assert not (folder / ".partial").exists()
    _same_products(folder, reference)


def test_a_changed_run_does_not_reuse_the_interrupted_one(scene, bundle, tmp_path):
    folder = _interrupt(scene, bundle, tmp_path / "out", None, signal.SIGKILL, rows=2)
    copy = tmp_path / "copy" / scene.stem
    shutil.copytree(folder, copy)
    # other options (here the land-cover polygon threshold) change the products: start over
    [changed] = map_files([scene], bundle, tmp_path / "copy", "torch",
                          MapOptions(batch=BATCH, progress=False, min_area_m2=100.0))
    assert changed.status == "mapped"
    assert json.loads((copy / "run.json").read_text())["resumed_at_tile"] == 0
    # staging files that cannot be reopened (here a truncated one): start over, no error
    broken = tmp_path / "broken" / scene.stem
    shutil.copytree(folder, broken)
    (broken / ".partial" / "embeddings.staging.tif").write_bytes(b"II*\0")
    [fresh] = map_files([scene], bundle, tmp_path / "broken", "torch", MapOptions(batch=BATCH, progress=False))
    assert fresh.status == "mapped", fresh.message
    assert json.loads((broken / "run.json").read_text())["resumed_at_tile"] == 0
    # --overwrite also starts over
    [redone] = map_files([scene], bundle, tmp_path / "out", "torch",
                         MapOptions(batch=BATCH, progress=False, overwrite=True))
    assert redone.status == "mapped"
    assert json.loads((folder / "run.json").read_text())["resumed_at_tile"] == 0


def _mosaic_rows(mosaic, rows: int, cols: int, t: int, start_row: int, first_row: int, probs_of) -> dict[int, np.ndarray]:
    """Output rows (index -> values) a mosaic emits when fed cell rows from ``start_row`` on,
    keeping only rows from ``first_row`` on."""
    from geo.blend import trim_strips
    from geo.grid import Tile

    emitted: dict[int, np.ndarray] = {}
    strips = []
    for r in range(start_row, rows):
        for c in range(cols):
            strips += mosaic.add(Tile(r * cols + c, r, c, None), probs_of(r, c), np.ones((t, t), bool))
    strips += mosaic.finish()
    for row, strip in trim_strips(strips, first_row):
        for i, values in enumerate(strip):
            emitted[row + i] = values
    return emitted


@pytest.mark.parametrize("t, stride", [(8, 8), (8, 4), (8, 2), (6, 4)])
def test_a_restarted_mosaic_rebuilds_the_unfinished_rows_exactly(t, stride):
    from geo.blend import finished_rows, make_mosaic, replay_start

    rows, cols, k = 7, 5, 3
    rng = np.random.default_rng(t * 10 + stride)
    table = rng.random((rows, cols, k, t, t)).astype(np.float32)
    probs_of = lambda r, c: table[r, c]
    out_rows, out_cols = rows * stride, cols * stride
    whole = _mosaic_rows(make_mosaic(out_rows, out_cols, t, stride, k), rows, cols, t, 0, 0, probs_of)
    assert sorted(whole) == list(range(out_rows))
    for done in range(1, rows):
        start, final = replay_start(done, t, stride), finished_rows(done, t, stride)
        resumed = _mosaic_rows(make_mosaic(out_rows, out_cols, t, stride, k, start), rows, cols, t, start, final,
                               probs_of)
        assert sorted(resumed) == list(range(final, out_rows))  # every unfinished row, no final one again
        for row, values in resumed.items():
            np.testing.assert_array_equal(values, whole[row], err_msg=f"row {row} after resuming at {done}")


def test_batch_select_keeps_outputs_aligned_with_their_tiles():
    from geo.grid import Tile
    from geo.pipeline import Batch

    tiles = [Tile(i, 0, i, None) for i in range(5)]
    has_data = np.array([True, False, True, True, False])
    batch = Batch(tiles, np.zeros((5, 2, 2), bool), has_data, np.array([[0.0], [2.0], [3.0]]),
                  np.array([[0.5], [0.6], [0.7]]), None)
    part = batch.select(np.array([False, True, True, False, True]))
    assert [t.index for t in part.tiles] == [1, 2, 4]
    assert part.has_data.tolist() == [False, True, False]
    assert part.embeddings.tolist() == [[2.0]] and part.scores.tolist() == [[0.6]] and part.landcover is None
