"""ADVANCE linear probe on a tiny synthetic ADVANCE-layout set (64 px images, 3 s WAV recordings)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import model.bundle as bundle_mod
from model.evaluation.advance import add_parser, embed_images, embed_recordings, main, probe_f1
from model.core.cli import run_cli
from model.data.folder_datasets import scan_advance, stratified_split
from model.nn.encoders import image_encoder_from_bundle
from model.evaluation.report import read_run_metrics

from tests.bundles import init_bundle as make_bundle


@pytest.fixture(scope="module")
def advance_dir(tmp_path_factory) -> Path:
    from model.synth.downstream import write_advance

    return write_advance(tmp_path_factory.mktemp("adv") / "advance", 36, size=64, seed=4, duration=3.0,
                         workers=1, progress=False)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    return {"full": make_bundle(base / "se" / "bundle"), "image_only": make_bundle(base / "simclr", audio=False)}


def test_scan_pairs_images_with_recordings(advance_dir):
    samples, classes = scan_advance(advance_dir)
    assert len(classes) == 12 and len(samples) == 36  # the twelve land uses, three places each
    for s in samples:
        assert s.image.stem == s.audio.stem and s.audio.suffix == ".wav"
        assert s.image.parent.name == s.audio.parent.name == classes[s.label]
    (advance_dir / "sound" / classes[0]).rename(advance_dir / "elsewhere")
    try:
        with pytest.raises(ValueError, match="no image has a recording"):
            scan_advance(advance_dir)
    finally:
        (advance_dir / "elsewhere").rename(advance_dir / "sound" / classes[0])


def test_embeddings_are_the_bundle_encoders_outputs(advance_dir, bundles):
    b = bundle_mod.load(bundles["full"])
    samples, _ = scan_advance(advance_dir)
    paths = [s.image for s in samples[:3]]
    z = embed_images(b, paths, progress=False)
    # images are already the bundle's 64 px tile size: the encoder sees (p / 255 - mean) / std
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        expected = image_encoder_from_bundle(b)(torch.from_numpy(b.image_input.normalise(pixels))).numpy()
    assert z.shape == (3, 16) and np.allclose(z, expected, atol=1e-4)
    za = embed_recordings(b, [s.audio for s in samples[:2]], progress=False)
    assert za.shape == (2, 16) and not np.allclose(za[0], za[1])


def test_probe_scores_weighted_f1():
    labels = np.repeat([0, 1, 2], 10)
    separable = np.eye(3)[labels] * 5 + np.random.default_rng(0).normal(0, 0.1, (30, 3))
    train, test = stratified_split(labels, 0.2, seed=0)
    assert probe_f1(separable, labels, train, test, seeds=[0, 1]) == [1.0, 1.0]
    constant = np.zeros((30, 2))  # every test sample gets the same class: F1_w = (1/3) * F1 of that class (0.5)
    assert probe_f1(constant, labels, train, test, seeds=[0]) == [pytest.approx(1 / 6)]


def test_advance_cli_scores_image_audio_and_both(advance_dir, bundles, tmp_path):
    out = tmp_path / "run"
    assert main(["--data", str(advance_dir), "--bundle", str(bundles["full"].parent), "--out", str(out)]) == 0
    m = read_run_metrics(out)
    assert (m["task"], m["dataset"], m["init"], m["seed"]) == ("advance", "advance", "se", [0, 1, 2, 3, 4])
    assert set(m["scores"]) == {"f1_image", "f1_audio", "f1_concat"}
    for values in m["scores"].values():
        assert len(values) == 5 and all(0.0 <= v <= 1.0 for v in values)
    assert (m["n_train"], m["n_test"]) == (24, 12)
    assert m["weighted_f1"]["image"]["mean"] == pytest.approx(np.mean(m["scores"]["f1_image"]))


def test_image_only_bundle_and_varying_splits(advance_dir, bundles, tmp_path):
    out = tmp_path / "run"
    main(["--data", str(advance_dir), "--bundle", str(bundles["image_only"]), "--out", str(out),
          "--seeds", "0", "1", "--vary-split", "--label", "simclr"])
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["scores"]) == ["f1_image"] and m["init"] == "simclr" and m["vary_split"] is True


def test_registers_on_evaluate_and_fails_in_one_line(advance_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="task"))
    args = parser.parse_args(["advance", "--data", "D", "--bundle", "B", "--out", "O"])
    assert args.task == "advance" and args.seeds == [0, 1, 2, 3, 4] and callable(args.func)
    code = run_cli(lambda: main(["--data", str(advance_dir), "--bundle", str(tmp_path), "--out", str(tmp_path / "o")]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "neither a bundle" in err and len(err.splitlines()) == 1


def _spoil(sample, what: str) -> None:
    """Make one ADVANCE item bad in a real way: a silent recording (same rate and length) or a
    truncated JPEG."""
    import soundfile as sf

    if what == "silent":
        info = sf.info(sample.audio)
        sf.write(sample.audio, np.zeros(info.frames, np.float32), info.samplerate)
    else:
        data = sample.image.read_bytes()
        sample.image.write_bytes(data[: len(data) // 3])


def test_bad_items_are_named_left_out_and_counted(advance_dir, bundles, tmp_path, capsys):
    import shutil

    data = shutil.copytree(advance_dir, tmp_path / "advance")
    samples, _ = scan_advance(data)
    _spoil(samples[0], "silent")
    _spoil(samples[5], "truncated")
    out = tmp_path / "run"
    assert main(["--data", str(data), "--bundle", str(bundles["full"].parent), "--out", str(out), "--seeds", "0"]) == 0
    m = read_run_metrics(out)
    assert m["left_out"] == 2 and m["n_train"] + m["n_test"] == 34
    named = {item["file"]: item["problem"] for item in m["left_out_items"]}
    assert "silent" in named[str(samples[0].audio)] and "corrupt image" in named[str(samples[5].image)]
    assert "2 samples could not be read and were left out" in capsys.readouterr().out


def test_a_set_too_small_for_the_probe_is_one_line(advance_dir, bundles, tmp_path, capsys):
    import shutil

    data = shutil.copytree(advance_dir, tmp_path / "advance")
    samples, _ = scan_advance(data)
    for s in samples[3:]:  # only the first class keeps its recordings
        _spoil(s, "silent")
    code = run_cli(lambda: main(["--data", str(data), "--bundle", str(bundles["full"].parent),
                                 "--out", str(tmp_path / "run"), "--seeds", "0"]))
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]  # beside progress bars
    assert code == 2
    assert "3 usable samples in 1 of 12 classes after 33 unreadable left out are too few" in err
    assert not (tmp_path / "run" / "metrics.json").exists()
