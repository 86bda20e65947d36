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
from model.evaluation.advance import OURS_DEFAULTS, add_parser, embed_images, embed_recordings, main, probe_f1
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
    assert m["protocol"] == "ours"
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
    assert args.protocol == "ours" and {k: getattr(args, k) for k in OURS_DEFAULTS} == OURS_DEFAULTS
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


# ---- --protocol reference (khdlr/SoundingEarth downstream/advance.py) -----------------------------

@pytest.fixture(scope="module")
def grouped_dir(advance_dir, tmp_path_factory) -> Path:
    """The 36 pairs regrouped into three classes of twelve (class i -> group i % 3): large enough for the
    reference's stratified 20 % test and 12.5 % validation parts, which each need a sample per class."""
    import shutil

    out = tmp_path_factory.mktemp("grouped") / "advance"
    for i, folder in enumerate(sorted((advance_dir / "vision").iterdir())):
        for kind, suffix in (("vision", ".jpg"), ("sound", ".wav")):
            target = out / kind / f"group_{i % 3}"
            target.mkdir(parents=True, exist_ok=True)
            for f in (advance_dir / kind / folder.name).glob(f"*{suffix}"):
                shutil.copy(f, target / f.name)
    return out


def _unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_reference_protocol_end_to_end(grouped_dir, bundles, tmp_path, capsys):
    import shutil

    from sklearn.model_selection import train_test_split

    data = shutil.copytree(grouped_dir, tmp_path / "advance")
    samples, classes = scan_advance(data)
    _spoil(samples[0], "silent")
    _spoil(samples[20], "truncated")
    out = tmp_path / "run"
    assert main(["--data", str(data), "--bundle", str(bundles["full"].parent), "--out", str(out),
                 "--protocol", "reference"]) == 0
    m = read_run_metrics(out)
    assert (m["protocol"], m["seed"], m["classes"]) == ("reference", [0, 42, 84, 126, 168], classes)
    assert set(m["scores"]) == {"f1_image", "f1_audio", "f1_concat"}
    for name in ("image", "audio", "concat"):
        assert len(m["scores"][f"f1_{name}"]) == 5 and all(0.0 <= v <= 1.0 for v in m["scores"][f"f1_{name}"])
        assert m["weighted_f1"][name]["mean"] == pytest.approx(np.mean(m["scores"][f"f1_{name}"]))
        assert m["weighted_f1"][name]["std"] == pytest.approx(np.std(m["scores"][f"f1_{name}"], ddof=1))
    # bad items are left out and counted as in our protocol
    assert m["left_out"] == 2 and "2 samples could not be read and were left out" in capsys.readouterr().out
    # 34 usable: test ceil(0.2 * 34) = 7, validation ceil(0.125 * 27) = 4, train 23
    assert (m["n_train"], m["n_val"], m["n_test"]) == (23, 4, 7)
    # independently: the reference's keys (sorted image paths) and labels (np.unique of folder names)
    paths = [p for p in sorted((data / "vision").glob("*/*.jpg")) if p not in (samples[0].image, samples[20].image)]
    names, labels = np.unique([p.parent.name for p in paths], return_inverse=True)
    expected = train_test_split([p.stem for p in paths], stratify=labels, test_size=0.2, random_state=42)[1]
    assert m["test_keys"] == list(expected) and list(names) == classes
    s = m["settings"]
    assert (s["classifier"]["penalty"], s["classifier"]["standardised"], s["distance_transform"]) == (
        "none", False, "l2_normalise")
    assert (s["image"]["pool"], s["sound"]["input"], s["split"]["val_size"]) == (2, "whole spectrogram", 0.1 / 0.8)


def test_reference_image_input_is_the_whole_image_pooled_to_half_size(advance_dir, bundles):
    from model.evaluation.advance import embed_images_reference

    b = bundle_mod.load(bundles["full"])
    paths = [s.image for s in scan_advance(advance_dir)[0][:2]]
    z = embed_images_reference(b, paths, progress=False)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]).astype(np.float64)  # (2, 64, 64, 3)
    x = ((pixels / 255 - np.array(b.image_input.mean)) / np.array(b.image_input.std)).transpose(0, 3, 1, 2)
    pooled = x.reshape(2, 3, 32, 2, 32, 2).mean(axis=(3, 5))  # each 2 x 2 block averaged: 64 px -> 32 px
    encoder = image_encoder_from_bundle(b)
    with torch.no_grad():
        expected = _unit(encoder(torch.from_numpy(pooled.astype(np.float32))).numpy())
        unpooled = _unit(encoder(torch.from_numpy(x.astype(np.float32))).numpy())
    assert np.allclose(z, expected, atol=1e-5) and not np.allclose(z, unpooled, atol=1e-3)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0)  # cosine bundle: the contrastive distance transform


def test_reference_sound_input_is_the_whole_scaled_spectrogram(advance_dir, bundles, tmp_path):
    import soundfile as sf

    from model.bundle.audio import load_audio, load_logmel
    from model.evaluation.advance import embed_sounds_reference
    from model.nn.encoders import audio_encoder_from_bundle

    b = bundle_mod.load(bundles["full"])
    config = b.audio_config
    path = scan_advance(advance_dir)[0][0].audio
    z = embed_sounds_reference(b, [path], progress=False)
    db = 10.0 * np.log(load_logmel(path, config).astype(np.float64))  # the "soundingearth" levels are exp(dB / 10)
    low, high = np.exp(-1.5), np.exp(0.5)
    s = np.clip((np.exp(db / 10) - low) / (high - low), 0, 1)
    assert s.shape == (128, 1 + len(load_audio(path, config.sample_rate)) // config.hop_length) == (128, 130)
    with torch.no_grad():
        expected = _unit(audio_encoder_from_bundle(b)(torch.from_numpy(s[None, None].astype(np.float32))).numpy())
    assert np.allclose(z, expected, atol=1e-5)
    assert not np.allclose(z, _unit(embed_recordings(b, [path], progress=False)), atol=1e-3)  # not chunk means
    y, rate = sf.read(path)
    sf.write(tmp_path / "short.wav", y[: len(y) // 2], rate)  # 1.5 s: another length, its own forward pass
    together = embed_sounds_reference(b, [path, tmp_path / "short.wav", path], progress=False)
    alone = embed_sounds_reference(b, [tmp_path / "short.wav"], progress=False)
    assert np.allclose(together, np.concatenate([z, alone, z]), atol=1e-5) and not np.allclose(z, alone, atol=1e-3)


def test_reference_levels_of_both_level_encodings():
    from model.bundle.audio import AudioConfig, logmel_from_waveform
    from model.evaluation.advance import levels_exact, reference_levels

    y = np.random.default_rng(0).normal(0, 0.1, 22050).astype(np.float32) * np.linspace(0, 1, 22050, dtype=np.float32)
    se, db = AudioConfig(), AudioConfig(level_encoding="db")
    a, b = reference_levels(logmel_from_waveform(y, se), se), reference_levels(logmel_from_waveform(y, db), db)
    assert np.allclose(a, b, atol=1e-5) and a.min() == 0.0 and a.max() == pytest.approx(1.0)
    assert levels_exact(se) and levels_exact(db) and not levels_exact(AudioConfig(level_encoding="db", db_offset=70))


def test_reference_penalty_follows_the_reference_loss(tmp_path):
    from model.evaluation.advance import reference_penalty
    from model.synth.random_bundle import random_bundle

    narrow = {"widths": (8, 16, 32, 64), "stem_width": 8}
    cases = {("cosine", None): "none", ("euclidean", None): "l2",
             ("cosine", "SymmetricCL"): "l2", ("euclidean", "EuclideanContrastiveLoss"): "none",
             ("euclidean", "TripletLoss"): "l2"}  # the reference: 'Contrastive' in LossFunction
    for i, ((distance, loss), penalty) in enumerate(cases.items()):
        provenance = {} if loss is None else {"reference_config": {"LossFunction": loss}}
        b = random_bundle(tmp_path / str(i), image_overrides=narrow, audio=False, distance=distance,
                          provenance=provenance)
        assert reference_penalty(b)[0] == penalty, (distance, loss)


def test_reference_classifier_is_the_multinomial_model_with_two_classes_too():
    """With two classes current scikit-learn fits one binary model; at C = 2 it equals the reference's
    two-class multinomial model with C = 1, minimised here independently."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    from model.evaluation.advance import reference_classifier

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    y = (x[:, 0] + rng.normal(0, 1.0, 40) > 0).astype(int)

    def objective(theta):  # sum of cross-entropies + |W|^2 / (2 C), C = 1, intercepts not penalised
        w, b = theta[:6].reshape(2, 3), theta[6:]
        return -log_softmax(x @ w.T + b, axis=1)[np.arange(40), y].sum() + 0.5 * (w ** 2).sum()

    theta = minimize(objective, np.zeros(8), method="BFGS", options={"gtol": 1e-10}).x
    w, b = theta[:6].reshape(2, 3), theta[6:]
    multinomial = np.exp(log_softmax(x @ w.T + b, axis=1))[:, 1]
    clf = reference_classifier("l2", 2).fit(x, y)
    assert np.allclose(clf.predict_proba(x)[:, 1], multinomial, atol=1e-4)
    assert reference_classifier("none", 12).C == np.inf and reference_classifier("l2", 12).C == 1.0


def test_reference_protocol_refuses_a_small_set_and_our_options_in_one_line(advance_dir, bundles, tmp_path, capsys):
    base = ["--data", str(advance_dir), "--bundle", str(bundles["full"]), "--out", str(tmp_path / "run"),
            "--protocol", "reference"]
    assert run_cli(lambda: main(base)) == 2  # 36 samples of 12 classes: a 20 % test part of 8 < 12 classes
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert ("36 usable samples in 12 of 12 classes are too few for the reference protocol's stratified splits "
            "(the test part (20 % of the whole set) would hold 8 samples, fewer than its 12 classes)") in err
    assert run_cli(lambda: main(base + ["--seeds", "0", "--C", "2"])) == 2
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert err == "error: --seeds --C: options of --protocol ours; the reference protocol fixes its split and classifier"
    assert not (tmp_path / "run" / "metrics.json").exists()
