"""Scoring mapped products against the synthetic scene's truth (geo.evaluate)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from geo.evaluate import NODATA, evaluate_map, landcover_scores

from tests.bundles import ROOT


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from model.synth.scene import write_scene

    out = tmp_path_factory.mktemp("scene")
    write_scene(out, size=256, gsd=0.5, seed=2, cell=32.0)
    return out


def _coarse_copy(truth, target, factor=2):
    """The truth at half the resolution (mode), as a product on an exact sub-grid."""
    with rasterio.open(truth) as src:
        profile = src.profile.copy()
        h, w = src.height // factor, src.width // factor
        transform = src.transform * src.transform.scale(factor)
        data = np.full((h, w), NODATA, np.uint8)
        reproject(rasterio.band(src, 1), data, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs=src.crs, resampling=Resampling.mode)
    profile.update(height=h, width=w, transform=transform, nodata=NODATA, tiled=False)
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data, 1)
    return data


def test_perfect_products_score_one_and_errors_count_exactly(scene, tmp_path):
    data = _coarse_copy(scene / "landcover_truth.tif", tmp_path / "landcover.tif")
    shutil.copy(scene / "soundscape_truth.tif", tmp_path / "soundscape.tif")
    report = evaluate_map(tmp_path, scene)
    assert report["landcover"]["overall_accuracy"] == pytest.approx(1.0)
    assert report["landcover"]["miou"] == pytest.approx(1.0)
    assert report["soundscape"]["agreement"] == pytest.approx(1.0)
    assert 0 < report["soundscape"]["baseline"] <= 1.0
    # flip a known number of product pixels to another class
    wrong = data.copy()
    flat = wrong.reshape(-1)
    flat[:100] = (flat[:100] + 1) % 6
    with rasterio.open(tmp_path / "landcover.tif", "r+") as dst:
        dst.write(wrong, 1)
    again = evaluate_map(tmp_path, scene)
    assert again["landcover"]["overall_accuracy"] == pytest.approx(1 - 100 / data.size)


def test_landcover_scores_against_direct_formulas():
    truth = np.array([0, 0, 1, 1, 2, NODATA], np.uint8)
    pred = np.array([0, 1, 1, 1, 0, 2], np.uint8)
    s = landcover_scores(pred, truth, ["a", "b", "c"])
    assert s["pixels"] == 5 and s["overall_accuracy"] == pytest.approx(3 / 5)
    # IoU a: tp 1 / (1 + fp 1 + fn 1); b: 2 / (2 + 1 + 0); c: 0 / (0 + 0 + 1)
    assert s["iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_command_line_errors_are_one_line(scene, tmp_path):
    r = subprocess.run([sys.executable, "-m", "geo.evaluate", str(tmp_path), "--truth", str(scene)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.strip().count("\n") == 0
