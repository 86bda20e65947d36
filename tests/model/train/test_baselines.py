"""Image-only SimCLR / MoCo baselines on a tiny SoundingEarth-format folder, and their use as --init."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import model.bundle as bundle_mod
from model.baselines import main
from model.bundle.image_input import ImageInput
from model.train.baselines import BaselineConfig, TwoViewImages, build_model, make_transform, train_image_paths
from model.core.cli import run_cli
from model.nn.init import resolve_init

FAST = ["--num-workers", "0", "--precision", "32-true", "--accelerator", "cpu"]
MEAN, STD = (0.3, 0.35, 0.4), (0.15, 0.2, 0.25)  # not ImageNet's


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory) -> Path:
    from model.synth.downstream import write_classify

    return write_classify(tmp_path_factory.mktemp("cls") / "scenes", 12, size=64, seed=8, workers=1, progress=False)


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory) -> Path:
    """Two scenes per land use (twelve classes), so that a half/half split tests every class."""
    from model.synth.downstream import write_classify

    return write_classify(tmp_path_factory.mktemp("cls") / "labelled", 24, size=64, seed=8, workers=1, progress=False)


def soundingearth_images(class_dir: Path, out: Path, gsd: bool = True) -> Path:
    """A SoundingEarth-format folder (metadata.csv + images/{key}.jpg) holding model.synth images."""
    (out / "images").mkdir(parents=True)
    rows = ["key,longitude,latitude" + (",gsd" if gsd else "")]
    for i, path in enumerate(sorted(class_dir.rglob("*.jpg"))):
        shutil.copy(path, out / "images" / f"{100000 + i}.jpg")
        rows.append(f"{100000 + i},11.5,48.1" + (",0.5" if gsd else ""))
    (out / "metadata.csv").write_text("\n".join(rows) + "\n")
    return out


@pytest.fixture(scope="module")
def pairs_dir(class_dir, tmp_path_factory) -> Path:
    return soundingearth_images(class_dir, tmp_path_factory.mktemp("se") / "pairs")


@pytest.fixture(scope="module")
def simclr_run(pairs_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "simclr"
    main(["simclr", "--data", str(pairs_dir), "--epochs", "1", "--out", str(out), "--image-size", "32",
          "--batch-size", "4", "--image-mean", *map(str, MEAN), "--image-std", *map(str, STD), *FAST])
    return out


def test_train_split_images_and_two_views(pairs_dir):
    paths = train_image_paths(pairs_dir)
    assert len(paths) == 9  # keys ending in 2, 5 and 7 are test / validation
    views = TwoViewImages(paths, make_transform("simclr", ImageInput(tile_size=32)), region=0.5)[0]
    assert len(views) == 2 and all(v.shape == (3, 32, 32) for v in views)
    assert not torch.equal(views[0], views[1])


def test_simclr_writes_an_image_only_bundle(simclr_run):
    assert (simclr_run / "checkpoints" / "last.ckpt").is_file() and (simclr_run / "config.yaml").is_file()
    b = bundle_mod.load(simclr_run / "bundle")
    assert b.distance == "cosine" and not b.has("audio_encoder") and b.embedding_dim == 512
    assert np.array_equal(b.tensors["image_encoder.fc.weight"], np.eye(512, dtype=np.float32))
    # a 0.375 centre crop of 64 px images at 0.5 m, seen at 32 px: 0.375 m per pixel
    assert b.image_input.tile_size == 32 and b.image_input.gsd == pytest.approx(0.375)
    assert (b.image_input.mean, b.image_input.std) == (MEAN, STD)  # what the views were normalised with
    prov = b.meta["provenance"]
    assert prov["method"] == "simclr" and prov["steps"] == 2 and prov["images"] == 9


def test_moco_trains_the_exported_backbone(pairs_dir, tmp_path):
    out = tmp_path / "moco"
    main(["moco", "--data", str(pairs_dir), "--epochs", "1", "--out", str(out), "--image-size", "32",
          "--batch-size", "4", "--memory-bank", "16", "--seed", "1", *FAST])
    L.seed_everything(1, verbose=False)
    untrained = build_model(BaselineConfig(method="moco", memory_bank=16)).backbone.state_dict()
    b = bundle_mod.load(out / "bundle")
    assert b.meta["provenance"]["method"] == "moco"
    assert not np.array_equal(b.tensors["image_encoder.conv1.weight"], untrained["conv1.weight"].numpy())
    logged = next((out / "logs" / "csv").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "train_loss_epoch" in logged


def test_baseline_run_as_init_for_classification(simclr_run, labelled_dir, tmp_path):
    from model.finetune import main as finetune

    init = resolve_init(str(simclr_run))
    b = bundle_mod.load(simclr_run / "bundle")
    assert init.kind == "bundle" and init.label == "simclr"
    assert np.array_equal(init.backbone["layer3.1.conv2.weight"].numpy(), b.tensors["image_encoder.layer3.1.conv2.weight"])
    out = tmp_path / "cls"
    finetune(["classify", "--data", str(labelled_dir), "--init", str(simclr_run), "--epochs", "1", "--out", str(out),
              "--image-size", "32", "--batch-size", "4", "--test-ratio", "0.5", *FAST])
    m = json.loads((out / "metrics.json").read_text())
    assert (m["init"], m["init_kind"], m["n_test"]) == ("simclr", "bundle", 12)


def test_unknown_ground_sample_distance_is_one_line(class_dir, tmp_path, capsys):
    data = soundingearth_images(class_dir, tmp_path / "nogsd", gsd=False)
    code = run_cli(lambda: main(["simclr", "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "r")]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--gsd" in err
    assert not (tmp_path / "r").exists()
