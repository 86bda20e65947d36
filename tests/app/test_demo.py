"""python -m app.demo --quick: a bundle that loads, a mapped scene with every product, instant reruns.

The quick demo is built once per test session into the session's base temp folder (about a minute
on an idle 2-core machine); tests/app/test_app.py and tests/app/test_app_browser.py reuse it. Set
GEOAUDIO_TEST_DEMO=/some/folder to keep it between sessions.
"""
from __future__ import annotations

import json
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from model.core.cli import run_cli
from app.demo import QUICK, DemoError, build_demo, main, read_demo



def test_quick_demo_bundle_loads_with_its_heads_and_gallery(quick_demo):
    from model.bundle import load
    from model.bundle.gallery import load_gallery

    bundle = load(quick_demo.bundle)
    assert bundle.image_input.tile_size == QUICK.tile_px
    assert bundle.image_input.gsd == pytest.approx(QUICK.tile_gsd)
    assert (bundle.audio_config.n_mels, bundle.audio_config.chunk_frames) == (QUICK.n_mels, QUICK.chunk_frames)
    assert set(bundle.heads) == {"soundscape", "landcover"}
    assert len(bundle.heads["soundscape"]["classes"]) == 6
    rows, embeddings = load_gallery(bundle)
    assert len(rows) == QUICK.pairs and embeddings.shape == (QUICK.pairs, bundle.embedding_dim)
    assert (quick_demo.pairs / rows["audio_path"].iloc[0]).is_file()
    assert quick_demo.info["bundle_hash"] == bundle.content_hash()


def test_quick_demo_scene_is_mapped_with_every_product(quick_demo):
    run = json.loads((quick_demo.map_dir / "run.json").read_text())
    assert run["bundle"]["content_hash"] == quick_demo.info["bundle_hash"]
    assert set(run["products"]) == {"embeddings.tif", "tiles.gpkg", "soundscape.tif", "soundscape_scores.tif",
                                    "landcover.tif", "landcover.gpkg"}
    with rasterio.open(quick_demo.scene) as scene, rasterio.open(quick_demo.map_dir / "landcover.tif") as land:
        assert land.crs == scene.crs and land.bounds == scene.bounds
        classes = land.read(1)
    assert set(np.unique(classes)) <= set(range(6))
    with rasterio.open(quick_demo.map_dir / "soundscape.tif") as sound:
        cells = sound.width * sound.height
    side = QUICK.scene_px // QUICK.tile_px
    assert cells == side * side
    tiles = gpd.read_file(quick_demo.map_dir / "tiles.gpkg")
    assert len(tiles) == cells and {"sound_1", "score_1", "near_1_key"} <= set(tiles.columns)


def test_rerun_returns_at_once_and_keeps_the_build(quick_demo):
    done = quick_demo.root / "DONE.json"
    before = done.stat().st_mtime_ns
    t0 = time.perf_counter()
    again = build_demo(quick_demo.root, seed=0, quick=True, quiet=True)
    assert time.perf_counter() - t0 < 1.0
    assert again.bundle == quick_demo.bundle and again.map_dir == quick_demo.map_dir
    assert done.stat().st_mtime_ns == before
    assert run_cli(lambda: main(["--out", str(quick_demo.root), "--quick", "--quiet"])) == 0


def test_a_different_seed_in_the_same_folder_is_a_one_line_error(quick_demo, capsys):
    with pytest.raises(DemoError, match="--force"):
        build_demo(quick_demo.root, seed=1, quick=True, quiet=True)
    assert run_cli(lambda: main(["--out", str(quick_demo.root), "--quick", "--seed", "1"])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "seed 0" in err[0]


def test_read_demo_is_none_for_an_unbuilt_folder(tmp_path):
    assert read_demo(tmp_path) is None
    (tmp_path / "DONE.json").write_text("{not json")
    assert read_demo(tmp_path) is None


def test_an_interrupted_build_redoes_only_what_is_missing(quick_demo):
    """A build killed after the gallery step: the rerun maps the scene again and nothing else."""
    import shutil

    (quick_demo.root / "DONE.json").unlink()
    shutil.rmtree(quick_demo.map_dir)
    rebuilt = build_demo(quick_demo.root, seed=0, quick=True, quiet=True)
    assert set(rebuilt.info["timings"]) == {"map"}
    assert (rebuilt.map_dir / "run.json").is_file()
    assert rebuilt.info["bundle_hash"] == quick_demo.info["bundle_hash"]


def test_force_refuses_to_delete_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DemoError, match="refusing to delete"):
        build_demo(tmp_path, quick=True, force=True, quiet=True)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_quick_demo_passes_its_quality_gates_and_records_them(quick_demo):
    from dataclasses import asdict

    gates = quick_demo.info["gates"]
    assert gates["thresholds"] == asdict(QUICK.gates)
    assert set(gates["results"]) == {"gallery", "retrieval", "soundscape", "landcover"}
    assert all(r["passed"] for r in gates["results"].values())
    assert gates["results"]["gallery"]["figure"] < QUICK.gates.max_gallery_cosine
    assert quick_demo.info["size"]["threads"] == QUICK.threads


def test_the_mapped_scene_is_scored_against_its_truth(quick_demo):
    from geo.evaluate import evaluate_map

    scores = quick_demo.info["map_scores"]
    assert set(scores) == {"landcover", "soundscape"}
    again = evaluate_map(quick_demo.map_dir, quick_demo.scene.parent)
    assert scores["landcover"]["overall_accuracy"] == again["landcover"]["overall_accuracy"]
    assert scores["landcover"]["pixels"] == QUICK.scene_px ** 2  # every scene pixel scored, on the scene's grid
    assert 0.0 <= scores["soundscape"]["agreement"] <= 1.0 and scores["soundscape"]["cells"] > 0
    # the soundscape truth is made on the map's own cells, so each mapped cell meets exactly one truth cell
    with rasterio.open(quick_demo.map_dir / "soundscape.tif") as sound, \
            rasterio.open(quick_demo.scene.parent / "soundscape_truth.tif") as truth:
        assert truth.transform == sound.transform and truth.shape == sound.shape
    assert scores["soundscape"]["cells"] == sound.width * sound.height


def test_a_failed_gate_is_one_line_naming_the_gate_and_its_figure(quick_demo):
    from dataclasses import replace

    from app.demo import _check_gates, _Layout

    strict = replace(QUICK, gates=replace(QUICK.gates, max_gallery_cosine=-1.0))
    with pytest.raises(DemoError) as failed:
        _check_gates(_Layout(quick_demo.root), strict, quiet=True)
    figure = quick_demo.info["gates"]["results"]["gallery"]["figure"]
    message = str(failed.value)
    assert message.startswith("quality gate gallery failed:") and f"{figure:.4f}" in message and "\n" not in message


def test_a_truncated_training_step_fails_the_build_naming_the_step(tmp_path):
    from app.demo import _check_not_truncated, _trained
    from model.synth.random_bundle import random_bundle
    from tests.bundles import init_bundle

    finished = init_bundle(tmp_path / "finished")
    cut = tmp_path / "cut"
    random_bundle(cut, dim=16, tile_size=64, gsd=0.5, distance="cosine",
                  provenance={"truncated": True, "steps": 3, "epochs_run": 0, "epochs": 20})
    assert _trained(finished) and not _trained(cut) and not _trained(tmp_path / "missing")
    _check_not_truncated(finished, "pretrain", 30.0)
    with pytest.raises(DemoError) as failed:
        _check_not_truncated(cut, "pretrain", 30.0)
    message = str(failed.value)
    assert message.startswith("demo step pretrain failed: training was truncated after 3 steps (0 of 20 epochs)")
    assert "30-minute safety stop" in message and "\n" not in message
