"""ONNX export, INT8 quantisation, parity checks, calibration tiles and the two heads' bundle formats.

Bundles are made here with random-initialised resnet18 encoders (128-d) at a 64 px tile size;
parity and calibration use the real GeoTIFF and recordings of ../shared/data.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from export.calibration import CalibrationError, load_tiles, split_holdout
from export.manifest import HASH_KEY, onnx_stamp, staging
from export.onnx import default_opset, export_bundle, main
from export.parity import ParityError, Tolerance
from export.sessions import open_session
from model.bundle import content_hash, encoder_tensors, load, make_meta, save
from model.bundle.files import ONNX_MANIFEST
from model.core.cli import run_cli
from model.nn.encoders import build_image_encoder, image_encoder_from_bundle
from model.bundle.image_input import ImageInput
from model.nn.landcover import (LandcoverError, build_segmenter, landcover_meta, landcover_tensors,
                             segmenter_from_bundle)
from model.synth.random_bundle import random_bundle
from tests.bundles import CLASSES, RGB, ROBIN, SHARED, TILE, full_bundle as make_bundle
from model.nn.soundscape_head import SoundscapeHead, SoundscapeHeadError, scores_from_embeddings, soundscape_meta




@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A full bundle exported through the CLI entry point with INT8 (8 calibration tiles)."""
    path = tmp_path_factory.mktemp("export") / "bundle"
    make_bundle(path)
    code = run_cli(lambda: main(["--bundle", str(path), "--int8", "--calibration", str(RGB),
                                 "--calibration-tiles", "8", "--exporter", "torchscript",
                                 "--parity-audio", str(ROBIN)]))
    assert code == 0
    return path


# ---------------------------------------------------------------------------------------------
# Heads


def test_soundscape_head_is_softmax_of_negative_distance_over_temperature():
    rng = np.random.default_rng(0)
    protos, z = rng.normal(size=(6, 16)).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    z[0] = protos[3] + 0.01  # right next to prototype 3
    for distance in ("euclidean", "cosine"):
        head = SoundscapeHead(protos, temperature=0.5, distance=distance)
        got = head(torch.from_numpy(z)).numpy()
        want = scores_from_embeddings(z, protos, 0.5, distance)
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
        assert got[0].argmax() == 3
    d = np.linalg.norm(z[1] - protos, axis=1)
    expected = np.exp(-d / 0.5) / np.exp(-d / 0.5).sum()
    np.testing.assert_allclose(scores_from_embeddings(z[1:2], protos, 0.5, "euclidean")[0], expected, rtol=1e-5)


def test_soundscape_meta_rejects_bad_input():
    with pytest.raises(SoundscapeHeadError, match="temperature"):
        soundscape_meta(CLASSES, 0.0, {})
    with pytest.raises(SoundscapeHeadError, match="unique"):
        soundscape_meta([CLASSES[0], CLASSES[0]], 1.0, {})
    with pytest.raises(SoundscapeHeadError, match="color"):
        soundscape_meta([{"name": "x", "color": [300, 0, 0]}], 1.0, {})


def test_landcover_head_round_trips_through_a_bundle(tmp_path):
    """A segmenter saved as image encoder + landcover head reloads with identical logits."""
    torch.manual_seed(1)
    image = build_image_encoder("resnet18", 128)
    seg = build_segmenter("resnet18", 3, decoder_channels=32, encoder_output_stride=16)
    seg.encoder.load_state_dict(image.backbone_state_dict())
    with torch.no_grad():  # make the decoder's batch-norm statistics non-trivial
        for m in seg.decoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    head = landcover_meta(CLASSES[:3], "resnet18", 64, 0.5, {"decoder_channels": 32, "encoder_output_stride": 16})
    meta = make_meta(image_spec=image.spec, distance="cosine", image_input=ImageInput(tile_size=64),
                     heads={"landcover": head})
    bundle = save(tmp_path / "b", meta, {**encoder_tensors("image_encoder", image), **landcover_tensors(seg)})
    assert json.loads((tmp_path / "b" / "bundle.json").read_text())["heads"]["landcover"]["arch"] == "deeplabv3plus"
    reloaded = segmenter_from_bundle(load(bundle.path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(seg.eval()(x), reloaded(x))


def test_landcover_on_a_custom_width_encoder(tmp_path):
    bundle = random_bundle(tmp_path / "custom", dim=128, image_overrides=dict(stem_width=32, widths=(32, 64, 128, 256)),
                           audio=False, landcover_classes=CLASSES[:2], decoder={"decoder_channels": 16})
    assert bundle.heads["landcover"]["encoder_name"] == "spec"
    logits = segmenter_from_bundle(bundle)(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, 2, 64, 64)
    meta = dict(bundle.meta, heads={"landcover": dict(bundle.heads["landcover"], encoder_name="resnet18")})
    meta["heads"]["landcover"].pop("encoder")
    mismatched = save(tmp_path / "mismatched", meta, bundle.tensors)  # a head made for another encoder
    with pytest.raises(LandcoverError, match="standard-width resnet18"):
        segmenter_from_bundle(mismatched)


# ---------------------------------------------------------------------------------------------
# Calibration tiles


def test_geotiff_tiles_skip_nodata_and_spread(tmp_path):
    tiles = load_tiles(RGB, 64)
    assert tiles.dtype == np.uint8 and tiles.shape[1:] == (64, 64, 3)
    assert (tiles.max(axis=3) == 0).mean(axis=(1, 2)).max() <= 0.1  # nodata border (0) mostly skipped
    few = load_tiles(RGB, 64, limit=5)
    assert len(few) == 5 and np.array_equal(few[0], tiles[0]) and np.array_equal(few[-1], tiles[-1])
    rgba = load_tiles(SHARED / "geotiff" / "RGBA.uint16.tif", 64, limit=3)
    assert rgba.dtype == np.uint8 and rgba.shape == (3, 64, 64, 3)
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.repeat(tiles[i], 2, axis=0)).save(folder / f"{i}.png")  # 128 x 64 px
    from_folder = load_tiles(folder, 32)
    assert from_folder.shape == (3, 32, 32, 3)
    calib, held = split_holdout(from_folder, 0.25)
    assert len(calib) + len(held) == 3 and len(held) == 1


@pytest.mark.parametrize("name, message", [("all-nodata.tif", "nodata"), ("corrupt.tif", "cannot read"),
                                           ("missing.tif", "no such")])
def test_bad_calibration_sources_fail_in_one_line(name, message):
    with pytest.raises(CalibrationError, match=message) as info:
        load_tiles(SHARED / "geotiff" / name, 64)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Staging: a set of files is installed whole or not at all


def test_staging_installs_every_file_or_none(tmp_path):
    with pytest.raises(RuntimeError, match="late failure"):
        with staging() as stage:
            for name in ("a.onnx", "b.onnx"):
                stage.temp(tmp_path / name).write_text(name)
            raise RuntimeError("late failure")
    assert list(tmp_path.iterdir()) == []  # no temporary file, nothing installed
    with staging() as stage:
        for name in ("a.onnx", "b.onnx"):
            tmp = stage.temp(tmp_path / name)
            tmp.write_text(name)
            assert tmp.name.startswith(f".{name}.") and not (tmp_path / name).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]
    assert (tmp_path / "b.onnx").read_text() == "b.onnx"


# ---------------------------------------------------------------------------------------------
# ONNX export


def test_export_writes_every_graph_stamped_and_checked(exported):
    current = content_hash(exported)
    manifest = json.loads((exported / ONNX_MANIFEST).read_text())
    assert manifest["bundle_hash"] == current and manifest["opset"] == default_opset() >= 17
    files = {e["file"]: e for e in manifest["files"]}
    for graph in ("image_encoder", "image_soundscape", "landcover", "audio_encoder"):
        assert f"{graph}.onnx" in files
    for name, entry in files.items():
        assert onnx_stamp(exported / name)[HASH_KEY] == current
        assert entry["bundle_hash"] == current
        for s in entry.get("parity", []):
            assert s["rel_err"] <= 1e-3 and s["min_cos"] >= 0.9999
    model = onnx.load(str(exported / "image_encoder.onnx"))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops  # folded into the convolutions
    assert model.graph.input[0].name == "image" and model.graph.output[0].name == "embedding"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert not list(exported.glob(".*"))  # no temporary files left


def test_exported_graphs_match_torch_at_any_batch(exported):
    bundle = load(exported)
    tiles = load_tiles(RGB, TILE, limit=3)
    x = bundle.image_input.normalise(tiles)
    encoder = image_encoder_from_bundle(bundle)
    with torch.no_grad():
        want = encoder(torch.from_numpy(x)).numpy()
    session = open_session(exported / "image_soundscape.onnx")
    emb, scores = session.run(None, {"image": x})
    np.testing.assert_allclose(emb, want, atol=1e-3 * np.abs(want).max())
    head = SoundscapeHead.from_bundle(bundle)
    np.testing.assert_allclose(scores, head(torch.from_numpy(want)).numpy(), atol=1e-4)
    single = open_session(exported / "image_encoder.onnx").run(None, {"image": x[:1]})[0]
    np.testing.assert_allclose(single, want[:1], atol=1e-3 * np.abs(want).max())
    probs = open_session(exported / "landcover.onnx").run(None, {"image": x})[0]
    assert probs.shape == (3, 4, TILE, TILE)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_int8_graphs_are_quantised_and_reported(exported):
    manifest = json.loads((exported / ONNX_MANIFEST).read_text())
    int8 = {e["graph"]: e for e in manifest["files"] if e["precision"] == "int8"}
    assert set(int8) == {"image_encoder", "image_soundscape", "landcover"}
    acc = int8["image_soundscape"]["accuracy_vs_fp32"]
    assert acc["tiles"] == 2 and 0.9 < acc["embedding_cosine_mean"] <= 1.0 + 1e-9
    assert 0.0 <= acc["soundscape_agreement"] <= 1.0
    assert 0.0 <= int8["landcover"]["accuracy_vs_fp32"]["landcover_pixel_agreement"] <= 1.0
    model = onnx.load(str(exported / "image_encoder.int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and "DequantizeLinear" in ops
    head_ops = [n for n in onnx.load(str(exported / "image_soundscape.int8.onnx")).graph.node
                if n.op_type == "Softmax"]
    assert head_ops  # the soundscape softmax is still there, in float
    assert (exported / "image_encoder.int8.onnx").stat().st_size < 0.4 * (exported / "image_encoder.onnx").stat().st_size


def test_dynamo_exporter(tmp_path):
    path = make_bundle(tmp_path / "b", audio=False, heads=False).path
    manifest = export_bundle(path, exporter="dynamo", log=lambda s: None)
    (entry,) = manifest["files"]
    assert entry["file"] == "image_encoder.onnx" and entry["exporter"] == "dynamo"
    assert entry["parity"][0]["rel_err"] <= 1e-3
    model = onnx.load(str(path / "image_encoder.onnx"))
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_fp16_graph_has_a_float32_interface(tmp_path):
    path = make_bundle(tmp_path / "b", audio=False, heads=False).path
    manifest = export_bundle(path, exporter="torchscript", fp16=True, log=lambda s: None)
    files = {e["file"]: e for e in manifest["files"]}
    assert set(files) == {"image_encoder.onnx", "image_encoder.fp16.onnx"}
    assert 0 < files["image_encoder.fp16.onnx"]["parity"][0]["rel_err"] <= 1e-2
    model = onnx.load(str(path / "image_encoder.fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def test_parity_failure_installs_nothing(tmp_path):
    path = make_bundle(tmp_path / "b", audio=False, heads=False).path
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_bundle(path, exporter="torchscript", tolerance=Tolerance(max_rel_err=0.0, min_cos=1.0),
                      log=lambda s: None)
    assert sorted(p.name for p in path.iterdir()) == before


def test_cli_errors_are_one_line(tmp_path, capsys):
    path = make_bundle(tmp_path / "b", audio=False, heads=False).path
    before = sorted(p.name for p in path.iterdir())
    assert run_cli(lambda: main(["--bundle", str(path), "--int8"])) == 2
    assert run_cli(lambda: main(["--bundle", str(tmp_path / "nope")])) == 2
    assert run_cli(lambda: main(["--bundle", str(path), "--int8", "--exporter", "torchscript",
                                 "--calibration", str(SHARED / "geotiff" / "corrupt.tif")])) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 3 and "--calibration" in errors[0] and "nope" in errors[1] and "corrupt.tif" in errors[2]
    assert sorted(p.name for p in path.iterdir()) == before
    shutil.rmtree(path)
