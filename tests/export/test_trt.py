"""TensorRT export: without CUDA or torch-tensorrt, one line and exit 2, nothing written; with them
(marked ``tensorrt``), engines that match PyTorch and that the ``trt`` backend runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.runtime import BackendError, open_backend
from export.torch_backend import trt_unavailable
from tests.bundles import RGB, TILE, full_bundle as make_bundle

ROOT = Path(__file__).resolve().parents[2]
WHY_NOT = trt_unavailable()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.skipif(WHY_NOT is None, reason="CUDA and torch_tensorrt are available here")
def test_without_cuda_or_torch_tensorrt_exit_2_in_one_line(tmp_path):
    path = make_bundle(tmp_path / "b", audio=False, heads=False).path
    before = _snapshot(path)
    done = subprocess.run([sys.executable, "-m", "export.trt", "--bundle", str(path), "--precision", "fp16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "pip install 'geoaudio[trt]'" in lines[0] and "CUDA" in lines[0]
    assert done.stdout == ""
    assert _snapshot(path) == before
    with pytest.raises(BackendError):
        open_backend(path, "trt")


@pytest.mark.tensorrt
@pytest.mark.skipif(WHY_NOT is not None, reason=f"needs CUDA and torch_tensorrt: {WHY_NOT}")
def test_engines_match_torch_and_run_in_the_trt_backend(tmp_path):
    from export.calibration import load_tiles
    from export.trt import export_engines

    path = make_bundle(tmp_path / "b").path
    manifest = export_engines(path, precision="fp32", max_batch=8, log=lambda s: None)
    assert {e["file"] for e in manifest["files"]} >= {"image_encoder.trt.ep", "landcover.trt.ep"}
    backend = open_backend(path, "trt")
    assert backend.name == "trt" and open_backend(path).name == "trt"
    tiles = load_tiles(RGB, TILE, limit=3)
    want = open_backend(path, "torch", device="cpu").embed_images(tiles)
    np.testing.assert_allclose(backend.embed_images(tiles), want, atol=1e-3 * np.abs(want).max())
    assert backend.segment_landcover(tiles).shape == (3, 4, TILE, TILE)
