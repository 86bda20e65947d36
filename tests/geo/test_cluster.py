"""``python -m geo.map --ray``: a real two-node Ray cluster on this machine, a real worker kill.

The module starts a Ray head and a second node (``ray start --block``, one CPU each, 80 MB object
stores, every port free-picked, session files in a temp folder) and tears both down in a
finaliser, however the tests end: the two ``ray start`` processes get SIGTERM (they stop their
own Ray processes) and anything left in their sessions is killed by process id. Six generated
scenes and a larger one (over ``--ray-split-tiles``) are mapped locally once (the reference) and
through the cluster; products must match pixel for pixel (up to floating-point ties of the random
model), tiles.gpkg tile for tile and landcover.gpkg class areas to 1 %. About 1.5-2.5 minutes on
two cores.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import psutil
import pytest
import rasterio

from geo.map import MapOptions, map_files
from tests.bundles import GEOTIFF, ROOT, map_bundle

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (the cluster extra)")]

TILE, GSD, SIZE, BATCH = 64, 0.5, 256, 8  # 4 x 4 tiles per scene, two batches
SCENES = 6
BIG, SPLIT_TILES = 384, 20  # one more scene of 6 x 6 tiles, over the split limit
KILLED = "scene2"  # the scene whose worker is killed mid-file
RASTERS = ("embeddings.tif", "soundscape.tif", "soundscape_scores.tif", "landcover.tif")
OBJECT_STORE = str(80 * 2**20)  # bytes per node
RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_ports() -> list[str]:
    """Ports of a node's agents, picked free (the defaults are fixed numbers another Ray on this
    machine may hold)."""
    return ["--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
            "--metrics-export-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port())]


def _ray_env(temp: Path) -> dict[str, str]:
    """Environment of every Ray process here: no auth token from ~/.ray, no usage stats, session
    files under ``temp``."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(temp)}


def _wait_started(process: subprocess.Popen, log: Path) -> None:
    """Wait until ``ray start --block`` says its node is up (it then blocks)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if "block forever" in log.read_text(errors="replace"):
            return
        assert process.poll() is None, f"ray start failed: {log.read_text(errors='replace')[-2000:]}"
        time.sleep(0.2)
    raise AssertionError(f"ray start did not finish in {START_TIMEOUT_S} s: {log.read_text(errors='replace')[-2000:]}")


def _session_processes(sessions: set[int]) -> list[psutil.Process]:
    """Processes still alive in the sessions of the ``ray start`` processes this module started."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) in sessions:
                found.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each ``ray start --block`` (it stops its node's processes), then SIGKILL whatever is
    left in their sessions."""
    sessions = {p.pid for p in processes}
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=45)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    left = _session_processes(sessions)
    for p in left:
        p.kill()
    psutil.wait_procs(left, timeout=10)


@pytest.fixture(scope="module")
def ray_temp():
    """A short temp folder for Ray's session files (its socket paths must stay short)."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield temp
    shutil.rmtree(temp, ignore_errors=True)


def _wait_port(port: int, process: subprocess.Popen, log: Path) -> None:
    """Wait until the head's GCS accepts connections on ``port``."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, f"ray start failed: {log.read_text(errors='replace')[-2000:]}"
            time.sleep(0.2)
    raise AssertionError(f"no GCS on port {port} after {START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def cluster(ray_temp, request) -> str:
    """``127.0.0.1:PORT`` of a head and one more node, one CPU each, stopped after the module. The
    local reference maps while the nodes start."""
    port = _free_port()
    env = _ray_env(ray_temp)
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", OBJECT_STORE,
              "--disable-usage-stats"]
    head_cmd = [RAY, "start", "--head", "--port", str(port), "--temp-dir", str(ray_temp), "--include-dashboard=false",
                "--dashboard-port", str(_free_port()), "--ray-client-server-port", str(_free_port()),
                *common, *_agent_ports()]
    node_cmd = [RAY, "start", "--address", f"127.0.0.1:{port}", *common, *_agent_ports()]
    started: list[subprocess.Popen] = []
    logs = [ray_temp / "head.log", ray_temp / "node.log"]
    request.addfinalizer(lambda: _stop(started))
    for i, cmd in enumerate((head_cmd, node_cmd)):
        with open(logs[i], "w") as out:
            started.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        if i == 0:
            _wait_port(port, started[0], logs[0])
    request.getfixturevalue("reference")
    for process, log in zip(started, logs):
        _wait_started(process, log)
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    """Six generated scenes of SIZE px (scene0..scene5.tif) and a BIG one (big.tif), last."""
    from model.synth.scene import write_scene

    folder = tmp_path_factory.mktemp("scenes")
    paths = []
    for seed, (name, size) in enumerate([(f"scene{i}", SIZE) for i in range(SCENES)] + [("big", BIG)]):
        made = write_scene(tmp_path_factory.mktemp("world"), size=size, gsd=GSD, seed=seed, cell=64.0, progress=False)
        paths.append(made["scene"].rename(folder / f"{name}.tif"))
    return paths


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return map_bundle(tmp_path_factory.mktemp("bundle") / "b", gsd=GSD, landcover=True, tile_size=TILE)


@pytest.fixture(scope="module")
def reference(scenes, bundle, tmp_path_factory) -> Path:
    """Every scene mapped locally (in this process)."""
    out = tmp_path_factory.mktemp("reference")
    for result in map_files(scenes, bundle, out, "torch", MapOptions(batch=BATCH, progress=False)):
        assert result.status == "mapped", result.message
    return out


def _args(inputs: list[Path], bundle: Path, out: Path, *more: str) -> list[str]:
    return [*map(str, inputs), "--bundle", str(bundle), "--out", str(out), "--backend", "torch",
            "--batch", str(BATCH), "--no-progress", *more]


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _same_products(folder: Path, reference: Path) -> None:
    """Rasters equal (class rasters up to rare ties, floats to 1e-4) on the same grid; tiles.gpkg
    and landcover.gpkg with the same rows."""
    for name in RASTERS:
        with rasterio.open(folder / name) as a, rasterio.open(reference / name) as b:
            assert a.transform == b.transform and a.shape == b.shape and a.crs == b.crs, name
            x, y = a.read(), b.read()
        if x.dtype == np.uint8:
            assert np.mean(x == y) >= 0.999, name
        else:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4, err_msg=name)
    tiles, ref_tiles = (gpd.read_file(f / "tiles.gpkg").sort_values(["row", "col"]).reset_index(drop=True)
                        for f in (folder, reference))
    assert not tiles.duplicated(["row", "col"]).any()
    assert list(zip(tiles.row, tiles.col)) == list(zip(ref_tiles.row, ref_tiles.col))
    assert list(tiles.columns) == list(ref_tiles.columns)
    np.testing.assert_allclose(tiles.score_1, ref_tiles.score_1, rtol=1e-4, atol=1e-4)
    land, ref_land = (gpd.read_file(f / "landcover.gpkg") for f in (folder, reference))
    area, ref_area = (t.groupby("class_name")["area_m2"].sum() for t in (land, ref_land))
    assert set(area.index) == set(ref_area.index)
    np.testing.assert_allclose(area[ref_area.index], ref_area, rtol=0.01)


def _run_info(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


class _Killer(threading.Thread):
    """Kills (SIGKILL) the Ray worker that holds the lock of ``out/KILLED`` once that folder's journal
    shows a checkpoint: a worker process dying mid-file."""

    def __init__(self, folder: Path, driver: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.folder, self.driver = folder, driver
        self.killed: int | None = None

    def run(self) -> None:
        while self.driver.poll() is None:
            pid = self._holder()
            if pid and (self.folder / ".partial" / "journal.json").is_file() and not (self.folder / "run.json").exists():
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.01)

    def _holder(self) -> int | None:
        """The pid in the folder's lock when it is a Ray worker (not the driver)."""
        try:
            pid = int(json.loads((self.folder / ".lock").read_text())["pid"])
            process = psutil.Process(pid)
            name = process.name() + " ".join(process.cmdline())
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return None
        return pid if pid != self.driver.pid and "ray::" in name else None


def test_scenes_map_on_two_nodes_big_one_split_through_a_killed_worker_and_a_bad_input(
        cluster, scenes, bundle, reference, ray_temp, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "broken.tif"
    shutil.copy(GEOTIFF / "corrupt.tif", bad)
    inputs = [*scenes[:3], bad, *scenes[3:]]
    cmd = [sys.executable, "-m", "geo.map", *_args(inputs, bundle, out, "--checkpoint-every", "0", "--ray", cluster,
                                                  "--ray-split-tiles", str(SPLIT_TILES))]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=_ray_env(ray_temp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    killer = _Killer(out / KILLED, driver)
    killer.start()
    stdout, stderr = driver.communicate(timeout=300)
    killer.join()
    assert driver.returncode == 2, stderr
    [error] = _errors(stderr)  # the bad input alone, in one line
    assert str(bad) in error and not (out / "broken").exists()
    assert f"{len(scenes)} mapped, 0 skipped (up to date), 1 failed" in stdout
    nodes = set()
    for scene in scenes:
        folder = out / scene.stem
        _same_products(folder, reference / scene.stem)
        info = _run_info(folder)
        assert info["backend"]["name"] == "torch" and info["timings"]["tiles"] > 0
        assert info["cluster"]["nodes"] == 2 and info["cluster"]["cpus"] == 2 and info["cluster"]["address"] == cluster
        assert info["cluster"]["split"] is (scene.stem == "big")
        nodes.add(info["cluster"]["node"]["node_id"])
        assert not (folder / ".partial").exists() and not (folder / ".lock").exists()
    assert len(nodes) == 2  # both nodes mapped files
    assert _run_info(out / "big")["cluster"]["inference_actors"] == 2  # one per node
    assert killer.killed is not None, "the worker was not killed"
    info = _run_info(out / KILLED)
    assert info["cluster"]["node"]["pid"] != killer.killed and info["resumed_at_tile"] > 0  # a new worker resumed


COMMAND_LINE = """
import sys
from geo.map import main
from model.core.cli import run_cli
scene, local_scene, out, port = sys.argv[1:5]
args = ["--bundle", sys.argv[5], "--backend", "torch", "--batch", "%d", "--no-progress"]
print("status", run_cli(lambda: main([scene, "--out", out, *args])), flush=True)
print("ray imported", "ray" in sys.modules, flush=True)
sys.modules["ray"] = None  # as if Ray were not installed
print("status", run_cli(lambda: main([scene, "--out", out, *args, "--ray", "auto"])), flush=True)
sys.modules.pop("ray")
print("status", run_cli(lambda: main([scene, "--out", out, *args, "--ray", "127.0.0.1:" + port])), flush=True)
print("status", run_cli(lambda: main([local_scene, "--out", out, *args, "--ray", "local"])), flush=True)
""" % BATCH


def test_without_ray_nothing_imports_it_ray_problems_are_one_line_and_ray_local_stops(scenes, bundle, reference,
                                                                                       tmp_path):
    """One child process: a run without --ray (no Ray imported), --ray without Ray installed, an
    address where nothing listens, then --ray local (its Ray instance is gone when the child ends)."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        port = _free_port()  # nothing listens there
        child = subprocess.Popen([sys.executable, "-c", COMMAND_LINE, str(scenes[0]), str(scenes[1]), str(tmp_path),
                                  str(port), str(bundle)], cwd=ROOT, env=_ray_env(temp), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
        stdout, stderr = child.communicate(timeout=300)
        left = _session_processes({child.pid})
        for p in left:
            p.kill()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    statuses = [line for line in stdout.splitlines() if line.startswith(("status", "ray imported"))]
    assert statuses == ["status 0", "ray imported False", "status 2", "status 2", "status 0"], stdout + stderr
    assert not left, f"Ray processes left behind: {left}"
    missing, unreachable = _errors(stderr)
    assert missing == "error: --ray needs Ray: pip install 'geoaudio[cluster]'"
    assert f"127.0.0.1:{port}" in unreachable
    for scene in scenes[:2]:
        _same_products(tmp_path / scene.stem, reference / scene.stem)
    info = _run_info(tmp_path / scenes[0].stem)
    assert "cluster" not in info
    info = _run_info(tmp_path / scenes[1].stem)["cluster"]
    assert info["address"] == "local" and info["nodes"] == 1 and info["split"] is False
