"""Sound classes and the soundscape head, fitted on a tiny synthetic folder with a random bundle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.bundle import load
from model.core.cli import run_cli
from model.evaluation.embed import embed_folder
from model.data.sound_classes import (
    DEFAULT_CLASS_FILE, SYNTHETIC_CLASSES, SoundClassError, default_classes, load_classes,
)
from model.heads.soundscape import class_prototypes, fit_soundscape, fit_temperature, mean_nll
from model.soundscape import main
from model.nn.soundscape_head import PROTOTYPES, scores_from_embeddings
from tests.bundles import EMBED_DIM, small_pairs, tiny_bundle


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return small_pairs(tmp_path_factory.mktemp("pairs"))


def test_head_is_fitted_and_stored(tmp_path, pairs):
    bundle = tiny_bundle(tmp_path / "bundle")
    fitted, report = fit_soundscape(bundle, pairs, progress=False)
    reloaded = load(fitted.path)  # validates head meta against the tensors
    head = reloaded.heads["soundscape"]
    assert [c["name"] for c in head["classes"]] == SYNTHETIC_CLASSES.names
    assert len({tuple(c["color"]) for c in head["classes"]}) == 6
    assert head["temperature"] > 0 and head["report"]["accuracy"] == report["accuracy"]
    calibration = head.get("query_calibration")  # a random bundle's distances may say nothing about places
    assert (calibration is None) == (report["query_calibration_auc"] is None)
    assert calibration is None or (calibration["beta"] < 0 and calibration["fitted_on"] == "val")
    protos = reloaded.tensors[PROTOTYPES]
    assert protos.shape == (6, EMBED_DIM) and protos.dtype == np.float32

    train = embed_folder(bundle, pairs, split="train", progress=False)
    for k, sound in enumerate(SYNTHETIC_CLASSES.classes):
        rows = [i for i, d in enumerate(train.dominant) if d in sound.dominant]
        np.testing.assert_allclose(protos[k], train.audio[rows].mean(axis=0), rtol=1e-4, atol=1e-5)
    scores = scores_from_embeddings(train.image, protos, head["temperature"], reloaded.distance)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)

    counts = report["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == report["recordings"] == 12
    assert all(c["train"] > 0 for c in counts.values())
    majority = max(counts, key=lambda n: counts[n]["train"])
    assert report["baseline"]["class"] == majority
    for split in ("val", "test"):
        assert 0.0 <= report["accuracy"][split] <= 1.0 and 0.0 <= report["baseline"][split] <= 1.0


def test_cli_prints_report(tmp_path, pairs, capsys):
    bundle = tiny_bundle(tmp_path / "bundle", distance="cosine")
    assert main(["--bundle", str(bundle.path), "--data", str(pairs)]) == 0
    out = capsys.readouterr().out
    assert "birdsong" in out and "baseline (always" in out and "temperature T =" in out
    protos = load(bundle.path).tensors[PROTOTYPES]
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, rtol=1e-5)  # cosine: unit prototypes


def test_class_without_recordings_is_one_line_error(tmp_path, pairs, capsys):
    bundle = tiny_bundle(tmp_path / "bundle")
    rules = tmp_path / "classes.yaml"
    rules.write_text("rule: dominant\nclasses:\n"
                     "  - {name: city, color: [255, 0, 0], dominant: [traffic]}\n"
                     "  - {name: glacier, color: [200, 200, 255], dominant: [ice]}\n")
    code = run_cli(lambda: main(["--bundle", str(bundle.path), "--data", str(pairs), "--classes", str(rules)]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "'glacier'" in err and "\n" not in err
    assert "soundscape" not in load(bundle.path).heads  # nothing written


def test_no_usable_recordings_is_an_error(tmp_path, pairs, capsys):
    bundle = tiny_bundle(tmp_path / "bundle")
    rules = tmp_path / "classes.yaml"
    rules.write_text("classes:\n  - {name: bells, color: [255, 217, 47], keywords: [carillon]}\n")
    assert run_cli(lambda: main(["--bundle", str(bundle.path), "--data", str(pairs),
                                 "--classes", str(rules)])) == 2
    assert "no usable recordings" in capsys.readouterr().err


def test_keyword_rules_assign_made_up_titles():
    classes = load_classes(DEFAULT_CLASS_FILE)
    assert {"traffic", "birds", "water", "wind", "voices", "bells", "machinery", "rain"} <= set(classes.names)
    table = pd.DataFrame({
        "title": ["Traffic on the A1", "Blackbird singing at dawn", "Church bells", "Harbour walk",
                  "Untitled", "Carillon"],
        "description": ["", "", "", "", "Rain on a tin roof", ""],
    })
    assert classes.assign(table).tolist() == ["traffic", "birds", "bells", "water", "rain", "bells"]
    assert classes.assign(pd.DataFrame({"title": ["Cartography lecture"]})).tolist() == [None]  # whole words
    synthetic = pd.DataFrame({"title": ["x", "y"], "dominant": ["birdsong", "machinery"]})
    assert default_classes(synthetic) is SYNTHETIC_CLASSES
    assert SYNTHETIC_CLASSES.assign(synthetic).tolist() == ["birdsong", "human activity"]
    land_cover = pd.DataFrame({"title": ["x"], "dominant": ["forest"]})  # an older world's land-cover names
    assert default_classes(land_cover).source == str(DEFAULT_CLASS_FILE)
    assert default_classes(pd.DataFrame({"title": ["x"]})).source == str(DEFAULT_CLASS_FILE)


def test_bad_class_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  - {name: traffic, color: [300, 0, 0], keywords: [car]}\n")
    with pytest.raises(SoundClassError, match="bad.yaml.*'traffic'.*color"):
        load_classes(bad)
    bad.write_text("classes: [unclosed\n")
    with pytest.raises(SoundClassError, match="bad.yaml: not valid YAML"):
        load_classes(bad)


def test_temperature_fit_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.0, 2.0, size=(4000, 5))
    true_t = 0.3
    p = np.exp(-d / true_t)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])
    t = fit_temperature(d, labels)
    assert abs(t - true_t) / true_t < 0.1
    assert mean_nll(d, labels, t) <= min(mean_nll(d, labels, true_t * f) for f in (0.5, 1.0, 2.0)) + 1e-9


def test_cosine_prototypes_are_normalised_means_of_normalised_embeddings():
    z = np.array([[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]], np.float32)
    protos = class_prototypes(z, np.array([0, 0, 1]), 2, "cosine")
    np.testing.assert_allclose(protos, [[np.sqrt(0.5), np.sqrt(0.5)], [1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(class_prototypes(z, np.array([0, 0, 1]), 2, "euclidean"), [[1.0, 0.5], [5.0, 0.0]])
