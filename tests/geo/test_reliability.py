"""geo.map never loses data and never reports success over a broken product (docs/reliability.md).

Real interruptions and real full disks: a ``python -m geo.map`` child killed with SIGKILL at a
chosen point of the finishing and publishing phases (``GEOAUDIO_TEST_KILL_AT``, geo.journal), a
tmpfs mounted for the test and filled up (skipped where mounting is not permitted), and two
``geo.map`` children on one output folder.
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

from geo.cog import StagedRaster, check_readable, cog_from_staging, staging_path
from geo.errors import WriteError
from geo.journal import JOURNAL, KILL_ENV
from geo.lock import LOCK_FILE
from geo.map import MapOptions, main, map_files
from geo.vectors import check_gpkg
from model.core.cli import run_cli
from tests.bundles import ROOT, map_bundle

GSD, SIZE = 0.5, 256  # 4 x 4 tiles of 64 px
RASTERS = ("embeddings.tif", "soundscape.tif", "soundscape_scores.tif", "landcover.tif")
QUIET = MapOptions(progress=False)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    from model.synth.scene import write_scene

    return write_scene(tmp_path_factory.mktemp("scene"), size=SIZE, gsd=GSD, seed=3, cell=64.0,
                       progress=False)["scene"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {"land": map_bundle(root / "land", gsd=GSD, landcover=True),
            "tiny": map_bundle(root / "tiny", gsd=GSD, landcover=False)}


@pytest.fixture(scope="module")
def reference(scene, bundles, tmp_path_factory) -> Path:
    """The products of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    [result] = map_files([scene], bundles["land"], out, "torch", QUIET)
    assert result.status == "mapped", result.message
    return out / scene.stem


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)`` -> a fresh tmpfs of that size under tmp_path, unmounted after the test;
    the test is skipped where mounting is not permitted."""
    points: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        point = tmp_path / f"disk{len(points)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _cmd(inputs: list[Path], bundle: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "geo.map", *map(str, inputs), "--bundle", str(bundle), "--out", str(out),
            "--backend", "torch", "--no-progress", *extra]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def _killed_at(point: str, scene: Path, bundle: Path, out: Path) -> subprocess.CompletedProcess:
    """Run geo.map in a child that SIGKILLs itself at ``point`` (geo.journal.kill_point)."""
    proc = subprocess.run(_cmd([scene], bundle, out), cwd=ROOT, env=_env(**{KILL_ENV: point}),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc


def _same_products(folder: Path, reference: Path) -> None:
    for name in RASTERS:
        check_readable(folder / name)
        with rasterio.open(folder / name) as a, rasterio.open(reference / name) as b:
            assert a.transform == b.transform and a.shape == b.shape and a.count == b.count
            x, y = a.read(), b.read()
        if x.dtype == np.uint8:  # the child's thread count may flip a rare near-tie
            assert np.mean(x == y) >= 0.99, name
        else:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4, err_msg=name)
    for name in ("tiles.gpkg", "landcover.gpkg"):
        assert len(gpd.read_file(folder / name)) == len(gpd.read_file(reference / name)), name
    tiles = gpd.read_file(folder / "tiles.gpkg")
    assert not tiles.duplicated(["row", "col"]).any()


@pytest.mark.parametrize("point", ["made:embeddings.tif", "made:tiles.gpkg", "published:embeddings.tif", "run.json"])
def test_a_kill_while_finishing_or_publishing_is_resumed_by_a_rerun(scene, bundles, reference, tmp_path, point,
                                                                    capsys):
    out = tmp_path / "out"
    _killed_at(point, scene, bundles["land"], out)
    folder = out / scene.stem
    # the dead process's lock is left behind, naming it; nothing half-written is published
    assert (folder / LOCK_FILE).is_file() and json.loads((folder / LOCK_FILE).read_text())["pid"] > 0
    assert (folder / "run.json").exists() == (point == "run.json")
    assert not list(folder.glob(".*.tmp*")) and (folder / ".partial" / JOURNAL).is_file()
    code = run_cli(lambda: main([str(scene), "--bundle", str(bundles["land"]), "--out", str(out), "--backend", "torch",
                                 "--no-progress"]))  # the same command again
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert ("0 mapped, 1 skipped" if point == "run.json" else "1 mapped, 0 skipped") in stdout
    assert sorted(p.name for p in folder.iterdir()) == sorted(["run.json", "tiles.gpkg", "landcover.gpkg", *RASTERS])
    assert json.loads((folder / "run.json").read_text())["products"]
    _same_products(folder, reference)


def test_a_staging_file_gone_after_a_kill_while_finishing_means_mapping_again(scene, bundles, tmp_path):
    out = tmp_path / "out"
    _killed_at("made:embeddings.tif", scene, bundles["tiny"], out)
    partial = out / scene.stem / ".partial"
    (partial / "soundscape.staging.tif").unlink()  # what the old publishing did before its journal said so
    [result] = map_files([scene], bundles["tiny"], out, "torch", QUIET)
    assert result.status == "mapped", result.message
    info = json.loads((out / scene.stem / "run.json").read_text())
    assert info["resumed_at_tile"] == 0 and info["timings"]["tiles"] == 16  # started over, no error
    for name in ("embeddings.tif", "soundscape.tif", "soundscape_scores.tif"):
        check_readable(out / scene.stem / name)


def _fill(disk: Path) -> Path:
    """Fill the file system of ``disk`` up to the last byte with one file; returns it."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
                f.flush()
        except OSError:
            pass
    return filler


def _estimate(scene: Path, bundle: Path):
    """geo.space's estimate for mapping ``scene`` with a land-cover bundle."""
    from geo.grid import TileGrid
    from geo.raster import open_raster
    from geo.space import estimate
    from model.bundle import load

    b = load(bundle)
    with open_raster(scene) as src:
        grid = TileGrid.from_source(src, b.image_input.tile_size, b.image_input.gsd)
    return estimate(grid, b.embedding_dim, len(b.heads["soundscape"]["classes"]), True)


def test_a_full_disk_while_finishing_fails_the_file_in_one_line_and_a_rerun_resumes(
        scene, bundles, reference, small_disk, capfd):
    from geo.space import written_bytes

    disk = small_disk("8m")
    out = disk / "out"
    _killed_at("finishing", scene, bundles["land"], out)  # every tile done, no product made yet
    folder, partial = out / scene.stem, out / scene.stem / ".partial"
    assert 0 < written_bytes(partial) <= _estimate(scene, bundles["land"]).staging  # the estimate bounds it
    filler = _fill(disk)
    capfd.readouterr()
    # the free-space check refuses first, in one line, and keeps the work done
    [refused] = map_files([scene], bundles["land"], out, "torch", QUIET)
    assert refused.status == "failed" and "mapping needs about" in refused.message, refused.message
    assert f"free in {folder}" in refused.message and "rerun to resume" in refused.message
    capfd.readouterr()
    # forced: the product writes fail on the full disk: one line, exit 2, nothing published
    code = run_cli(lambda: main([str(scene), "--bundle", str(bundles["land"]), "--out", str(out), "--backend", "torch",
                                 "--no-progress", "--ignore-free-space"]))
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err  # one line: no GDAL or libtiff lines
    assert "No space left on device" in err[0] and "rerun to resume" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == [".partial"]  # no product, no run.json
    assert json.loads((partial / JOURNAL).read_text())["phase"] == "finishing"
    # space again: the rerun makes the products from the kept staging files
    filler.unlink()
    [resumed] = map_files([scene], bundles["land"], out, "torch", QUIET)
    assert resumed.status == "mapped", resumed.message
    assert resumed.timings["tiles"] == 0  # no tile mapped again
    assert not partial.exists() and (folder / "run.json").is_file()
    _same_products(folder, reference)


def test_a_run_that_will_not_fit_is_refused_in_one_line_before_writing(scene, bundles, small_disk, capsys):
    disk = small_disk("1m")
    code = run_cli(lambda: main([str(scene), "--bundle", str(bundles["tiny"]), "--out", str(disk / "out"),
                                 "--backend", "torch", "--no-progress"]))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert f"{disk / 'out' / scene.stem}: mapping needs about" in err[0] and "free in" in err[0]
    assert "--ignore-free-space" in err[0]
    assert list((disk / "out").iterdir()) == []  # nothing written


def test_write_errors_gdal_only_reports_fail_the_write_in_one_line(small_disk, capfd):
    disk = small_disk("1m")
    raster = StagedRaster(disk / "big.tif", width=512, height=512, count=4, dtype="float32",
                          transform=rasterio.Affine(1, 0, 1000, 0, -1, 2000), crs="EPSG:3857", nodata=float("nan"),
                          descriptions=["a", "b", "c", "d"])
    with pytest.raises(WriteError, match="No space left on device") as caught:
        for row in range(0, 512, 64):  # 4 MB: GDAL's cache takes it, the disk cannot
            raster.write(np.ones((4, 64, 512), np.float32), row)
        raster.seal()  # the close that writes the blocks reports the error but does not raise it
    raster.discard()
    assert str(caught.value).startswith(f"cannot write {staging_path(disk / 'big.tif')}") and "free in" in str(caught.value)
    assert capfd.readouterr().err.strip() == ""  # nothing printed by GDAL or libtiff


def test_a_truncated_product_does_not_read_back(tmp_path):
    raster = StagedRaster(tmp_path / "p.tif", width=300, height=300, count=2, dtype="float32",
                          transform=rasterio.Affine(1, 0, 1000, 0, -1, 2000), crs="EPSG:3857", nodata=float("nan"),
                          descriptions=["a", "b"])
    raster.write(np.random.default_rng(0).random((2, 300, 300), np.float32), 0)
    raster.seal()
    cog = cog_from_staging(raster.staging, tmp_path / "p.tif", "average")
    check_readable(cog)  # whole: passes
    cut = tmp_path / "cut.tif"
    cut.write_bytes(cog.read_bytes()[: cog.stat().st_size * 2 // 3])
    with pytest.raises(WriteError, match="does not read back whole"):
        check_readable(cut)
    frame = gpd.GeoDataFrame({"v": range(500)}, geometry=gpd.points_from_xy(range(500), range(500)), crs=3857)
    frame.to_file(tmp_path / "t.gpkg", layer="t", engine="pyogrio")
    check_gpkg(tmp_path / "t.gpkg", "t", 500)
    with pytest.raises(WriteError, match="does not read back"):
        check_gpkg(tmp_path / "t.gpkg", "t", 501)  # a feature missing
    data = (tmp_path / "t.gpkg").read_bytes()
    (tmp_path / "cut.gpkg").write_bytes(data[: len(data) // 2])
    with pytest.raises(WriteError, match="does not read back"):
        check_gpkg(tmp_path / "cut.gpkg", "t", 500)


def _start(cmd: list[str], **popen) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def _paused_holder(scene: Path, bundle: Path, out: Path) -> subprocess.Popen:
    """A geo.map child stopped (SIGSTOP) while it holds the lock of ``out/<scene stem>``."""
    child = _start(_cmd([scene], bundle, out))
    lock = out / scene.stem / LOCK_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if json.loads(lock.read_text())["pid"] == child.pid:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    assert child.poll() is None, child.communicate()
    os.kill(child.pid, signal.SIGSTOP)
    return child


def test_a_second_run_on_a_folder_being_mapped_says_so_and_maps_its_other_inputs(scene, bundles, tmp_path):
    other = tmp_path / "other.tif"
    shutil.copy(scene, other)
    out = tmp_path / "out"
    first = _paused_holder(scene, bundles["tiny"], out)
    try:
        second = subprocess.run(_cmd([scene, other], bundles["tiny"], out), cwd=ROOT, env=_env(),
                                capture_output=True, text=True, timeout=180)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"being mapped by process {first.pid}" in errors[0] and "--wait" in errors[0]
    assert "1 mapped, 0 skipped (up to date), 0 failed, 1 busy" in second.stdout
    assert (out / "other" / "run.json").is_file()
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err  # the first run was not disturbed
    info = json.loads((out / scene.stem / "run.json").read_text())
    assert len(gpd.read_file(out / scene.stem / "tiles.gpkg")) == info["timings"]["tiles_with_data"] == 16
    assert not (out / scene.stem / LOCK_FILE).exists()


def test_wait_waits_for_the_run_in_progress_and_then_finds_it_done(scene, bundles, tmp_path):
    out = tmp_path / "out"
    first = _paused_holder(scene, bundles["tiny"], out)
    try:
        second = _start(_cmd([scene], bundles["tiny"], out, "--wait"))
        line = next((ln for ln in second.stderr if ln.startswith("waiting: ")), "")  # blocks until it waits
        assert f"being mapped by process {first.pid}" in line, line
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=180) == 0
    stdout, stderr = second.communicate(timeout=180)
    assert second.returncode == 0, stderr
    assert "0 mapped, 1 skipped (up to date), 0 failed" in stdout
