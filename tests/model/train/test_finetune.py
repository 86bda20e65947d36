"""Downstream fine-tuning end to end on tiny synthetic sets: scene classification and DeepGlobe segmentation.

Data comes from model.synth (classify / deepglobe layouts, 64-96 px); one classification image is
re-saved as a TIFF the way UC Merced ships them. Every run is one epoch on CPU.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import model.bundle as bundle_mod
from model.train.classify import SceneClassifier, accuracy_scores, confusion_matrix
from model.core.cli import run_cli
from model.finetune import main
from model.data.folder_datasets import (
    DEEPGLOBE_COLOURS, IGNORE_INDEX, decode_mask, scan_class_folders, scan_deepglobe, split_tiles, stratified_split,
)
from model.nn.init import InitError, resolve_init
from model.train.segment import segmentation_scores, sliding_window_logits, window_starts
from tests.bundles import RGB, published_checkpoint, init_bundle as make_bundle

KEEP = ["busy_farmland", "lake", "woodland"]
FAST = ["--num-workers", "0", "--precision", "32-true", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory) -> Path:
    """Three land uses of four 64 px images; the first image of each class is a TIFF."""
    from model.synth.downstream import write_classify

    root = write_classify(tmp_path_factory.mktemp("cls") / "ucm", 48, size=64, seed=5, workers=1, progress=False)
    for folder in root.iterdir():
        if folder.name not in KEEP:
            shutil.rmtree(folder)
            continue
        first = sorted(folder.glob("*.jpg"))[0]
        Image.open(first).save(first.with_suffix(".tif"))
        first.unlink()
    return root


@pytest.fixture(scope="module")
def deepglobe_dirs(tmp_path_factory) -> dict[str, Path]:
    from model.synth.downstream import write_deepglobe

    base = tmp_path_factory.mktemp("dg")
    single = write_deepglobe(base / "single", 5, size=96, seed=2, workers=1, progress=False)
    split = write_deepglobe(base / "split", 5, size=96, seed=2, split=True, test_fraction=0.4, workers=1,
                            progress=False)
    return {"single": single, "split": split}


# --- readers ----------------------------------------------------------------------------------

def test_class_folders_read_tiff_and_jpeg(class_dir):
    data = scan_class_folders(class_dir)
    assert data.classes == KEEP and len(data) == 12
    assert sum(p.suffix == ".tif" for p in data.paths) == 3
    assert np.bincount(data.labels).tolist() == [4, 4, 4]
    from model.data.transforms import read_image

    tif = next(p for p in data.paths if p.suffix == ".tif")
    assert tuple(read_image(tif).shape) == (3, 64, 64)


def test_stratified_split_is_seeded_disjoint_and_per_class():
    labels = np.repeat([0, 1, 2], [10, 5, 2])
    train, test = stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[test]).tolist() == [2, 1, 1]
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(labels)
    again = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(again[1], test)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=4)[1], test)


def test_deepglobe_both_layouts_and_mask_colours(deepglobe_dirs, tmp_path):
    single = scan_deepglobe(deepglobe_dirs["single"])
    assert len(single["train"]) == 5 and single["test"] == []
    parts = split_tiles(single["train"], 0.2, seed=0)
    assert len(parts["test"]) == 1 and len(parts["train"]) == 4
    split = scan_deepglobe(deepglobe_dirs["split"])
    assert len(split["train"]) == 3 and len(split["test"]) == 2
    assert all(t.mask.parent.name == "masks" for t in split["test"])
    # near-pure colours (as in the released PNGs) decode to their class; black and stray colours are ignored
    rgb = np.array([[[3, 250, 251], [0, 0, 0], [250, 10, 5], [255, 255, 255]]], dtype=np.uint8)
    assert decode_mask(rgb).tolist() == [[0, IGNORE_INDEX, IGNORE_INDEX, 5]]
    assert decode_mask(np.array([DEEPGLOBE_COLOURS], dtype=np.uint8)).tolist() == [[0, 1, 2, 3, 4, 5]]
    broken = tmp_path / "train"
    broken.mkdir()
    shutil.copy(single["train"][0].image, broken / "1_sat.jpg")
    with pytest.raises(ValueError, match="no mask 1_mask.png"):
        scan_deepglobe(tmp_path)


# --- metrics ----------------------------------------------------------------------------------

def test_classification_accuracy_from_confusion():
    target = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    overall, per_class = accuracy_scores(cm)
    assert overall == pytest.approx(4 / 6)
    assert per_class == pytest.approx([2 / 3, 1.0, 0.0])


def test_segmentation_oa_and_miou_match_the_direct_formula():
    target = np.array([[0, 0, 1, 1], [1, 2, 2, IGNORE_INDEX], [3, 3, 0, IGNORE_INDEX]])
    pred = np.array([[0, 1, 1, 1], [1, 2, 0, 3], [3, 0, 0, 2]])
    scores = segmentation_scores(confusion_matrix(pred, target, 5, IGNORE_INDEX), ["a", "b", "c", "d", "e"])
    valid = target != IGNORE_INDEX
    assert scores["overall_accuracy"] == pytest.approx((pred[valid] == target[valid]).mean())
    ious = []
    for k in range(4):  # class 4 occurs nowhere: excluded from the mean
        inter = ((pred == k) & (target == k) & valid).sum()
        union = (((pred == k) | (target == k)) & valid).sum()
        ious.append(inter / union)
        assert scores["per_class_iou"]["abcd"[k]] == pytest.approx(inter / union)
    assert scores["per_class_iou"]["e"] is None
    assert scores["miou"] == pytest.approx(np.mean(ious))


def test_sliding_window_equals_a_whole_image_pass_for_a_pointwise_model():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1)
    assert window_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    for h, w in ((70, 50), (20, 24)):  # the second is smaller than a window: padded, then cropped
        x = torch.randn(1, 3, h, w)
        out = sliding_window_logits(model, x, window=32, stride=16, batch_size=3)
        assert out.shape == (1, 4, h, w)
        assert torch.allclose(out, model(x), atol=1e-5)


# --- --init -----------------------------------------------------------------------------------

def test_init_variants_load_the_given_backbone(tmp_path):
    import torchvision

    tv = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(tv, tmp_path / "imagenet.pth")
    init = resolve_init(str(tmp_path / "imagenet.pth"))
    encoder = init.encoder(embed_dim=3)
    assert init.kind == "weights" and init.label == "imagenet" and encoder.fc.out_features == 3
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in tv.items() if not k.startswith("fc."))

    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tv.items()}, str(tmp_path / "imagenet.safetensors"))
    assert torch.equal(resolve_init(str(tmp_path / "imagenet.safetensors")).backbone["layer4.1.bn2.weight"],
                       tv["layer4.1.bn2.weight"])

    run = tmp_path / "pretrain_run"
    make_bundle(run / "bundle", stem_width=32, widths=(64, 182, 256, 512))  # SoundingEarth-like widths
    init = resolve_init(str(run))
    assert init.label == "pretrain_run" and init.spec.arch == "custom"
    b = bundle_mod.load(run / "bundle")
    assert np.array_equal(init.encoder(5).state_dict()["layer2.0.conv1.weight"].numpy(),
                          b.tensors["image_encoder.layer2.0.conv1.weight"])
    assert resolve_init("random", arch="resnet50").spec.arch == "resnet50"
    with pytest.raises(InitError, match="neither a bundle"):
        resolve_init(str(tmp_path))


def test_frozen_classifier_trains_only_the_head():
    model = SceneClassifier(resolve_init("random").encoder(embed_dim=3), freeze=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"encoder.fc.weight", "encoder.fc.bias"}
    model.train()
    assert not model.encoder.bn1.training and model.encoder.fc.training
    opt = model.configure_optimizers()["optimizer"]
    assert sum(len(g["params"]) for g in opt.param_groups) == 2


# --- end to end -------------------------------------------------------------------------------

def test_classify_random_init_end_to_end(class_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["classify", "--data", str(class_dir), "--init", "random", "--epochs", "1", "--out", str(out),
                 "--image-size", "64", "--batch-size", "4", "--test-ratio", "0.25", "--seed", "3", *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["task"], m["dataset"], m["init"], m["seed"], m["epochs"]) == ("classify", "ucm", "random", 3, 1)
    assert m["n_test"] == 3 and m["n_train"] == 9
    cm = np.array(m["confusion"])
    assert cm.sum() == 3 and m["accuracy"] == pytest.approx(np.trace(cm) / 3)
    assert m["scores"]["accuracy"] == m["accuracy"] and set(m["per_class_accuracy"]) == set(KEEP)
    assert Image.open(out / "confusion.png").size[0] > 100
    assert list((out / "logs" / "csv").rglob("metrics.csv"))


def test_classify_with_the_reference_protocol_keeps_the_projection(class_dir, tmp_path):
    from model.finetune import _classifier, build_parser, classify_settings
    from model.train.classify import ProjectionClassifier

    bundle = make_bundle(tmp_path / "init" / "bundle")  # cosine distance, 16-d projection
    out = tmp_path / "run"
    assert main(["classify", "--data", str(class_dir), "--init", str(bundle), "--epochs", "1", "--out", str(out),
                 "--protocol", "reference", *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["protocol"], m["lr"], m["weight_decay"], m["schedule"], m["augment"]) == (
        "reference", 1e-3, 0.0, "constant", False)
    assert (m["image_size"], m["batch_size"], m["n_train"], m["n_test"]) == (64, 48, 6, 6)  # native 64 px, even/odd
    assert sum(sum(row) for row in m["confusion"]) == 6
    model = _classifier(resolve_init(str(bundle)), 3, "reference")
    assert isinstance(model, ProjectionClassifier) and model.normalise and model.head.in_features == 16
    z = model.encoder(torch.zeros(2, 3, 64, 64))
    assert torch.allclose(z, resolve_init(str(bundle)).projection_encoder()(torch.zeros(2, 3, 64, 64)))
    assert not isinstance(_classifier(resolve_init("random"), 3, "reference"), ProjectionClassifier)
    args = build_parser().parse_args(["classify", "--data", "d", "--init", "random", "--epochs", "5", "--out", "o",
                                      "--protocol", "reference", "--batch-size", "4", "--image-size", "600"])
    settings = classify_settings(args, None)  # given flags win over the preset
    assert (settings["batch_size"], settings["image_size"], settings["lr"]) == (4, 600, 1e-3)
    args.batch_size = None
    assert classify_settings(args, None)["batch_size"] == 8  # AID-sized images: the reference's batch


def test_classify_from_a_torchvision_state_dict_frozen_leaves_a_corrupt_image_out(class_dir, tmp_path, capsys):
    import torchvision

    data = shutil.copytree(class_dir, tmp_path / "ucm")
    bad = sorted(data.glob("*/*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    out = tmp_path / "run"
    main(["classify", "--data", str(data), "--init", str(weights), "--epochs", "1", "--out", str(out),
          "--image-size", "64", "--batch-size", "4", "--freeze", "--name", "UCM", "--label", "imagenet", *FAST])
    m = json.loads((out / "metrics.json").read_text())
    assert (m["dataset"], m["init"], m["init_kind"], m["freeze"]) == ("UCM", "imagenet", "weights", True)
    assert 0.0 <= m["accuracy"] <= 1.0
    assert m["left_out"] == 1 and m["n_train"] + m["n_test"] == 11
    assert m["left_out_items"][0]["file"] == str(bad) and "corrupt image" in m["left_out_items"][0]["problem"]
    assert "1 images could not be read and were left out" in capsys.readouterr().out


def test_unreadable_images_and_masks_are_left_out_until_nothing_is_left(class_dir, deepglobe_dirs, tmp_path):
    from model.data.bad_items import LeftOut

    data = shutil.copytree(class_dir, tmp_path / "ucm")
    for image in sorted((data / KEEP[0]).iterdir()):
        image.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{KEEP[0]}: class folder holds no readable image"):
        scan_class_folders(data)
    tiles = shutil.copytree(deepglobe_dirs["single"], tmp_path / "dg")
    first = scan_deepglobe(tiles)["train"][0]
    first.mask.write_bytes(first.mask.read_bytes()[:100])
    left_out = LeftOut()
    assert len(scan_deepglobe(tiles, left_out)["train"]) == 4
    [(file, problem)] = left_out.items
    assert file == str(first.image) and problem.startswith(f"its mask {first.mask.name} is unreadable")


def test_segment_single_layout_random_init_writes_metrics_and_bundle(deepglobe_dirs, tmp_path):
    from model.nn.landcover import segmenter_from_bundle

    out = tmp_path / "seg"
    main(["segment", "--data", str(deepglobe_dirs["single"]), "--init", "random", "--epochs", "1", "--out", str(out),
          "--crop-size", "64", "--batch-size", "4", "--crops-per-tile", "1", "--decoder-channels", "32", *FAST])
    m = json.loads((out / "metrics.json").read_text())
    assert (m["task"], m["init"], m["n_train"], m["n_test"]) == ("segment", "random", 4, 1)
    cm = np.array(m["confusion"])
    assert cm.shape == (6, 6) and m["overall_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert set(m["per_class_iou"]) == {"urban", "agriculture", "rangeland", "forest", "water", "barren"}
    assert m["scores"] == {"overall_accuracy": m["overall_accuracy"], "miou": m["miou"]}
    b = bundle_mod.load(out / "bundle")
    head = b.heads["landcover"]
    assert head["encoder_name"] == "resnet18" and head["tile_size"] == 64 and len(head["classes"]) == 6
    assert not b.has("audio_encoder")
    logits = segmenter_from_bundle(b)(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 6, 64, 64)


def test_segment_split_layout_from_a_bundle_keeps_its_audio_encoder(deepglobe_dirs, tmp_path):
    init = make_bundle(tmp_path / "pre" / "bundle")
    out = tmp_path / "seg"
    main(["segment", "--data", str(deepglobe_dirs["split"]), "--init", str(init.parent), "--epochs", "1",
          "--out", str(out), "--crop-size", "64", "--window", "64", "--stride", "32", "--batch-size", "3",
          "--crops-per-tile", "1", "--decoder-channels", "32", *FAST])
    m = json.loads((out / "metrics.json").read_text())
    assert (m["init"], m["n_train"], m["n_test"], m["window"], m["stride"]) == ("pre", 3, 2, 64, 32)
    before, after = bundle_mod.load(init), bundle_mod.load(out / "bundle")
    for name, value in before.tensors.items():
        if name.startswith("audio_encoder.") or name.startswith("image_encoder.fc."):
            assert np.array_equal(after.tensors[name], value), name
    assert after.audio_config == before.audio_config and after.distance == "cosine"
    assert not np.array_equal(after.tensors["image_encoder.conv1.weight"], before.tensors["image_encoder.conv1.weight"])
    assert after.meta["provenance"]["init"] == "pre"


def test_segment_with_a_frozen_encoder_merges_back_into_its_init_bundle(deepglobe_dirs, tmp_path):
    from model.bundle.merge import merge

    init = make_bundle(tmp_path / "pre" / "bundle")
    out = tmp_path / "seg"
    main(["segment", "--data", str(deepglobe_dirs["split"]), "--init", str(init), "--epochs", "1",
          "--out", str(out), "--crop-size", "64", "--batch-size", "3", "--crops-per-tile", "1",
          "--decoder-channels", "32", "--freeze-encoder", *FAST])
    before, after = bundle_mod.load(init), bundle_mod.load(out / "bundle")
    for name, value in before.tensors.items():
        if name.startswith("image_encoder."):  # weights and BatchNorm statistics unchanged
            assert np.array_equal(after.tensors[name], value), name
    merged = merge(init, out / "bundle", tmp_path / "merged")
    assert "landcover" in merged.heads and merged.has("audio_encoder")


@pytest.mark.slow  # about 30 s: import, one epoch at 192 px, merge, ONNX export, two mapping runs
def test_segment_from_an_imported_published_checkpoint_then_geo_map_maps_its_land_cover(deepglobe_dirs, tmp_path):
    """The published widths (stem 32, stages 64/182/256/512): import, fine-tune a land-cover head on
    a frozen encoder, merge it into the imported bundle, map a GeoTIFF with torch and ONNX."""
    import rasterio

    from export.onnx import export_bundle
    from geo.map import MapOptions, map_files
    from model.bundle.merge import merge
    from model.import_soundingearth import convert
    from model.nn.landcover import segmenter_from_bundle

    # 192 px tiles at 2 x 300 m: RGB.byte.tif (300 m pixels) maps in a few tiles
    imported = convert(published_checkpoint(tmp_path / "se.pt"), tmp_path / "se", source_gsd=300.0)
    spec = imported.encoder_spec("image_encoder")
    assert (spec.arch, spec.stem_width, spec.widths) == ("custom", 32, (64, 182, 256, 512))
    out = tmp_path / "seg"
    main(["segment", "--data", str(deepglobe_dirs["single"]), "--init", str(imported.path), "--epochs", "1",
          "--out", str(out), "--crop-size", "192", "--gsd", "600", "--batch-size", "4", "--crops-per-tile", "1",
          "--decoder-channels", "32", "--freeze-encoder", *FAST])
    tuned = bundle_mod.load(out / "bundle")
    head = tuned.heads["landcover"]
    assert head["encoder_name"] == "spec" and head["encoder"]["widths"] == [64, 182, 256, 512]
    assert segmenter_from_bundle(tuned)(torch.zeros(1, 3, 64, 64)).shape == (1, 6, 64, 64)
    merged = merge(imported.path, tuned.path, tmp_path / "merged")
    assert "landcover" in merged.heads and merged.has("audio_encoder")
    export_bundle(merged.path, exporter="torchscript", log=lambda s: None)  # parity-checked against torch
    land = {}
    for backend in ("torch", "onnx"):
        [result] = map_files([RGB], merged.path, tmp_path / backend, backend, MapOptions(progress=False))
        assert result.status == "mapped", result.message
        with rasterio.open(tmp_path / backend / "RGB.byte" / "landcover.tif") as ds:
            land[backend], nodata = ds.read(1), ds.nodata
    valid = land["torch"] != nodata
    assert valid.mean() > 0.5 and np.all(land["torch"][valid] < 6)
    assert (land["onnx"] == land["torch"]).mean() > 0.99


def test_bad_input_is_one_line(class_dir, tmp_path, capsys):
    code = run_cli(lambda: main(["classify", "--data", str(tmp_path / "missing"), "--init", "random",
                                 "--epochs", "1", "--out", str(tmp_path / "r")]))
    assert code == 2 and "no such dataset folder" in capsys.readouterr().err
    code = run_cli(lambda: main(["classify", "--data", str(class_dir), "--init", str(tmp_path / "w.pth"),
                                 "--epochs", "1", "--out", str(tmp_path / "r")]))
    assert code == 2 and "no such weights file" in capsys.readouterr().err


def test_segment_with_the_reference_protocol(deepglobe_dirs, tmp_path):
    from model.data.folder_datasets import scan_deepglobe
    from model.train.segment import TilePatches, read_tile, reference_scores

    data = shutil.copytree(deepglobe_dirs["single"], tmp_path / "dg")
    ids = sorted(t.tile_id for t in scan_deepglobe(data)["train"])
    (data / "valid_ids.txt").write_text(f"{int(ids[1])}\n{int(ids[3])}\n")
    out = tmp_path / "seg"
    assert main(["segment", "--data", str(data), "--init", "random", "--epochs", "1", "--out", str(out),
                 "--protocol", "reference", "--crop-size", "64", "--patch-stride", "32", "--batch-size", "4",
                 "--decoder-channels", "32", *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["protocol"], m["split"], m["n_train"], m["n_test"]) == ("reference", "valid_ids.txt", 3, 2)
    assert (m["lr"], m["weight_decay"], m["schedule"], m["patch_stride"], m["window"]) == (1e-3, 0.0, "constant", 32, None)
    assert m["decoder"] == {"decoder_channels": 32, "decoder_atrous_rates": [6, 12, 18], "decoder_aspp_separable": False}
    assert m["scores"]["overall_accuracy"] == m["overall_accuracy_mean_of_tiles"]
    assert 0.0 <= m["overall_accuracy_mean_of_tiles"] <= 1.0

    tiles = scan_deepglobe(data)["train"]
    patches = TilePatches(tiles[:1], patch=64, stride=32)  # 96 px tile: origins 0 and 32 on each axis
    assert len(patches) == 4 and patches.index[-1] == (0, 32, 32)
    image, mask = patches[3]
    assert torch.equal(mask, read_tile(tiles[0])[1][32:96, 32:96].long()) and image.shape == (3, 64, 64)
    confusion = np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]])  # the third class occurs nowhere
    scores = reference_scores(confusion, [1.0, 0.5])
    assert scores["overall_accuracy_mean_of_tiles"] == 0.75 and np.isnan(scores["miou_all_classes"])
    assert reference_scores(confusion[:2, :2], [1.0])["miou_all_classes"] == pytest.approx((0.75 + 0.8) / 2)
