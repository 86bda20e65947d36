"""Audiovisual pretraining end to end on a tiny synthetic world: train, bundle, evaluate."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import model.bundle as bundle_mod
from model.pretrain import parse_args
from model.train.pretrain import PretrainConfig, run

from tests.bundles import ROOT

STATS = dict(image_mean=[0.3, 0.35, 0.4], image_std=[0.15, 0.2, 0.25])  # not ImageNet's


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from model.synth.pairs import write_pairs

    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs", 40, size=128, seed=3, duration=(3.0, 4.0))


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = PretrainConfig(data=str(pairs), out=str(out), epochs=2, batch_size=8, image_size=48, num_workers=0,
                         loss="contrastive", precision="32-true", checkpoint_every=1, audio_source="audio",
                         n_mels=64, chunk_frames=48, **STATS)
    return out, run(cfg)


def test_run_writes_checkpoints_logs_and_a_valid_bundle(trained):
    out, bundle_path = trained
    for name in ("epoch000.ckpt", "epoch001.ckpt", "best.ckpt", "last.ckpt"):
        assert (out / "checkpoints" / name).is_file()
    assert list((out / "logs" / "csv").rglob("metrics.csv"))
    assert list((out / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    b = bundle_mod.load(bundle_path)
    assert b.distance == "cosine"  # the contrastive loss compares normalised embeddings
    assert b.image_input.tile_size == 48
    # model.synth pairs are at 0.5 m; a 0.375 crop of 128 px resized to 48 px: 0.5 m per pixel
    assert b.image_input.gsd == pytest.approx(0.5)
    # the normalisation the run trained with, from its config
    assert list(b.image_input.mean) == STATS["image_mean"] and list(b.image_input.std) == STATS["image_std"]
    assert b.meta["provenance"]["steps"] > 0 and b.meta["provenance"]["loss"] == "contrastive"
    # the audio input the run trained on: 64 mel bands, 48 frames per chunk
    assert (b.audio_config.n_mels, b.audio_config.chunk_frames) == (64, 48)


def test_resume_continues_from_the_last_checkpoint(trained, pairs):
    out, _ = trained
    cfg = PretrainConfig(data=str(pairs), out=str(out), epochs=3, batch_size=8, image_size=48, num_workers=0,
                         loss="contrastive", precision="32-true", resume="last", audio_source="audio",
                         n_mels=64, chunk_frames=48, **STATS)
    run(cfg)
    assert not (out / "checkpoints" / "epoch002.ckpt").exists()  # checkpoint_every 0: only last and best
    import torch

    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2  # replaced each epoch
    b = bundle_mod.load(out / "bundle")
    assert b.meta["provenance"]["epochs_run"] == 3


def test_evaluate_retrieval_writes_json_csv_and_curve(trained, pairs, tmp_path):
    _, bundle_path = trained
    out = tmp_path / "ret.json"
    r = subprocess.run([sys.executable, "-m", "model.evaluate", "retrieval", "--bundle", str(bundle_path),
                        "--data", str(pairs), "--split", "all", "--audio-source", "audio", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    for direction in ("image_to_audio", "audio_to_image"):
        m = report[direction]
        assert m["n"] == 40
        assert set(m) >= {"recall@1", "recall@10", "recall@100", "median_rank", "km@10", "km@100"}
        assert 0 <= m["recall@1"] <= m["recall@10"] <= m["recall@100"] == 1.0
        assert 1 <= m["median_rank"] <= 40 and np.isfinite(m["km@10"])
    assert out.with_suffix(".csv").is_file() and out.with_suffix(".png").stat().st_size > 1000


def test_yaml_config_and_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data: /some/where\nloss: naive_triplet\nbatch_size: 16\n")
    cfg = parse_args(["--config", str(cfg_file), "--batch-size", "4"])
    assert cfg.loss == "naive_triplet" and cfg.batch_size == 4 and cfg.data == "/some/where"
    cfg_file.write_text("data: x\nbogus: 1\n")
    with pytest.raises(ValueError, match="unknown config keys"):
        parse_args(["--config", str(cfg_file)])


def test_missing_data_folder_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "model.pretrain", "--data", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "nope" in r.stderr and r.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("flags, message", [
    (["--n-mels", "64"], "{pairs}: spectrogram JPEGs hold 128 mel bands and the audio input has 64; "
                         "read the recordings instead (--audio-source audio)"),
    (["--audio-source", "audio", "--chunk-frames", "0"], "audio input: "),
])
def test_an_audio_input_the_source_cannot_give_is_one_line_before_training(pairs, tmp_path, flags, message):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "model.pretrain", "--data", str(pairs), "--out", str(out), *flags],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {message.format(pairs=pairs)}"), r.stderr
    assert r.stderr.strip().count("\n") == 0 and not out.exists()


def test_resume_from_a_bad_checkpoint_is_one_line_before_training(pairs, tmp_path):
    import os
    import zipfile

    import torch

    class Code:
        def __reduce__(self):
            return (os.system, ("true",))

    bad = {"empty.ckpt": b"", "random.ckpt": os.urandom(3000)}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"x": Code()}, tmp_path / "code.ckpt")
    (tmp_path / "truncated.ckpt").write_bytes((tmp_path / "code.ckpt").read_bytes()[:400])
    torch.save({"conv1.weight": torch.zeros(2)}, tmp_path / "weights.pth")  # tensors, but not a training state
    expected = {"empty.ckpt": "empty file, not a checkpoint", "random.ckpt": "not a PyTorch checkpoint",
                "code.ckpt": "would need to run code: it refers to posix.system",
                "truncated.ckpt": "not a PyTorch checkpoint", "weights.pth": "not a training checkpoint",
                "missing.ckpt": "no such checkpoint file"}
    assert zipfile.is_zipfile(tmp_path / "code.ckpt")
    for name, message in expected.items():
        out = tmp_path / f"run_{name}"
        r = subprocess.run([sys.executable, "-m", "model.pretrain", "--data", str(pairs), "--out", str(out),
                            "--resume", str(tmp_path / name)], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2, (name, r.stderr)
        assert r.stderr.strip() == f"error: {tmp_path / name}: " + r.stderr.strip().split(": ", 2)[2]
        assert message in r.stderr and "\n" not in r.stderr.strip() and "weights_only=False" not in r.stderr
        assert not out.exists()  # refused before anything was written


# ---- --preset reference: the SoundingEarth code's pretraining --------------------------------------

TINY_SPEC = dict(arch="custom", block="basic", layers=[1, 1, 1, 1], stem_width=8, widths=[8, 16, 24, 32],
                 embed_dim=16)


def test_reference_preset_values_and_what_overrides_them(tmp_path):
    from model.train.pretrain import REFERENCE_PRETRAIN

    cfg = parse_args(["--data", "x", "--preset", "reference"])
    assert cfg.preset == "reference" and {k: getattr(cfg, k) for k in REFERENCE_PRETRAIN} == REFERENCE_PRETRAIN
    assert (cfg.optimizer, cfg.schedule, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs) == (
        "adam", "constant", 1e-3, 0.0, 256, 300)
    assert (cfg.loss, cfg.margin, cfg.augment, cfg.head_init, cfg.bundle_from) == (
        "batch_all_reference", 1.0, "reference", "reference", "last")
    for arch, channels in (("resnet18", 3), ("resnet18", 1)):
        spec = cfg.encoder_spec(arch, channels)
        assert (spec.arch, spec.stem_width, spec.widths, spec.in_channels) == ("custom", 32, (64, 182, 256, 512), channels)
    # flags given explicitly win over the preset
    cfg = parse_args(["--data", "x", "--preset", "reference", "--epochs", "2", "--lr", "5e-4", "--optimizer", "adamw",
                      "--augment", "ours", "--stem-width", "8", "--widths", "8", "16", "24", "32", "--no-augment"])
    assert (cfg.epochs, cfg.lr, cfg.optimizer, cfg.augment, cfg.stem_width, cfg.widths) == (
        2, 5e-4, "adamw", "none", 8, [8, 16, 24, 32])
    assert (cfg.schedule, cfg.batch_size, cfg.loss) == ("constant", 256, "batch_all_reference")  # the rest: preset's
    # a config file may name the preset; its own values override the preset's, flags override both
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data: x\npreset: reference\nbatch_size: 64\nloss: batch_all_triplet\nepochs: 5\n")
    cfg = parse_args(["--config", str(cfg_file), "--epochs", "3"])
    assert (cfg.preset, cfg.batch_size, cfg.loss, cfg.epochs, cfg.optimizer) == (
        "reference", 64, "batch_all_triplet", 3, "adam")
    # ours stays the default
    cfg = parse_args(["--data", "x"])
    assert (cfg.preset, cfg.optimizer, cfg.schedule, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.loss) == (
        "ours", "adamw", "cosine", 1e-4, 32, 10, "batch_all_triplet")
    assert (cfg.augment, cfg.stem_width, cfg.widths, cfg.head_init, cfg.bundle_from) == ("ours", 0, None, "ours", "best")
    assert cfg.encoder_spec("resnet18", 3).arch == "resnet18"
    # configs written before augment had kinds still read; bad values are one line
    cfg_file.write_text("data: x\naugment: false\n")
    assert parse_args(["--config", str(cfg_file)]).augment == "none"
    for text, message in (("optimizer: sgd", "optimizer must be one of adamw, adam"),
                          ("widths: [8, 16, 24]", "widths 4 positive integers"), ("preset: theirs", "preset must be")):
        cfg_file.write_text(f"data: x\n{text}\n")
        with pytest.raises(ValueError, match=message):
            parse_args(["--config", str(cfg_file)])


def test_reference_optimiser_schedule_and_head_initialisation():
    import torch

    from model.train.audiovisual import AudioVisualModel

    specs = dict(image_spec={**TINY_SPEC, "in_channels": 3}, audio_spec={**TINY_SPEC, "in_channels": 1})
    torch.manual_seed(0)
    reference = AudioVisualModel(**specs, loss="batch_all_reference", lr=1e-3, weight_decay=0.0, optimizer="adam",
                                 schedule="constant", head_init="reference")
    opt = reference.configure_optimizers()
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["weight_decay"] == 0.0  # no scheduler: constant
    ours = AudioVisualModel(**specs).configure_optimizers()
    assert type(ours["optimizer"]) is torch.optim.AdamW
    assert isinstance(ours["lr_scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    # the reference's 1x1-conv head: Kaiming normal with fan out D = 16, std sqrt(2 / 16); ours is
    # torch's Linear default, uniform with bound 1 / sqrt(32), std 0.10
    torch.manual_seed(0)
    weights = torch.cat([AudioVisualModel(**specs, head_init="reference").image_encoder.fc.weight.flatten()
                         for _ in range(4)])
    assert weights.std().item() == pytest.approx((2 / 16) ** 0.5, rel=0.1)
    assert AudioVisualModel(**specs).image_encoder.fc.weight.abs().max().item() <= 32 ** -0.5


def test_reference_preset_tiny_run_writes_a_bundle_that_names_it(pairs, tmp_path):
    import torch
    import yaml

    from model.data.datamodule import SoundingEarthDataModule
    from model.data.transforms import ReferenceAugment

    dm = SoundingEarthDataModule(pairs, augment="reference", num_workers=0, audio_source="audio")
    dm.setup()
    assert isinstance(dm.train_set.transform, ReferenceAugment) and dm.train_set.region == 0.5
    out = tmp_path / "reference"
    cfg = parse_args(["--data", str(pairs), "--out", str(out), "--preset", "reference", "--epochs", "1",
                      "--batch-size", "8", "--stem-width", "8", "--widths", "8", "16", "24", "32", "--embed-dim", "16",
                      "--image-size", "48", "--num-workers", "0", "--precision", "32-true", "--accelerator", "cpu",
                      "--audio-source", "audio", "--n-mels", "64", "--chunk-frames", "48"])
    b = bundle_mod.load(run(cfg))
    provenance = b.meta["provenance"]
    assert provenance["preset"] == "reference" and provenance["loss"] == "batch_all_reference"
    assert provenance["steps"] > 0 and provenance["epochs_run"] == 1
    settings = provenance["settings"]
    assert {k: settings[k] for k in ("optimizer", "schedule", "lr", "weight_decay", "augment", "head_init",
                                     "bundle_from", "batch_size", "epochs", "margin")} == {
        "optimizer": "adam", "schedule": "constant", "lr": 1e-3, "weight_decay": 0.0, "augment": "reference",
        "head_init": "reference", "bundle_from": "last", "batch_size": 8, "epochs": 1, "margin": 1.0}
    for part in ("image_encoder", "audio_encoder"):
        spec = b.encoder_spec(part)
        assert (spec.arch, spec.stem_width, spec.widths, spec.embed_dim) == ("custom", 8, (8, 16, 24, 32), 16)
    assert b.distance == "euclidean"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["preset"], saved["optimizer"], saved["augment"], saved["widths"]) == (
        "reference", "adam", "reference", [8, 16, 24, 32])
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["lr_schedulers"] == []  # constant learning rate
    # the bundle holds the last epoch's weights, as the reference evaluates latest.pt
    assert np.array_equal(b.tensors["image_encoder.fc.weight"], last["state_dict"]["image_encoder.fc.weight"].numpy())
