"""benchmarks/gpu.py stays working where there is no GPU: one 'no CUDA' line and exit 0, and the same
code runs on the CPU at toy sizes (--device cpu --quick) and writes its record."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.bundles import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu.py"


def test_without_cuda_it_says_so_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, even on a machine that has one
    r = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no CUDA: ") and r.stdout.count("\n") == 1


@pytest.mark.slow
def test_the_same_code_runs_on_the_cpu_at_toy_sizes(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    record = json.loads(out.read_text())
    assert record["device"] == "cpu" and record["quick"] is True
    assert set(record["train"]) == {f"resnet18/resnet18 {m}" for m in ("fp32", "bf16", "bf16+channels_last")}
    assert all(v > 0 for v in (*record["train"].values(), *record["encoder"].values()))
    assert record["map"]["status"] == "mapped" and record["map"]["map_tiles_per_s"] > 0
    assert "geo.map / model" in r.stdout
