"""Importing the published SoundingEarth checkpoints, built here from the published tensor layout.

The reference network (model/nn/reference_net.py) is written from
../shared/reference/soundingearth-checkpoints.md with torchvision's own blocks, independently of
model/nn/encoders.py, so that the converted bundle is checked against the network definition the
document describes.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from torchvision.models.resnet import BasicBlock

import model.bundle as bundle_mod
from model.import_soundingearth import convert
from model.nn.checkpoint_file import CheckpointError, check_archive
from model.nn.encoders import audio_encoder_from_bundle, image_encoder_from_bundle
from model.nn.reference_net import ReferenceImageEncoder, ReferenceModel
from tests.bundles import ROOT, published_state

VARIANTS = ["image_encoder_ResNet18_audio_encoder_ResNet18", "image_encoder_ResNet50_audio_encoder_ResNet18"]


@pytest.fixture(scope="module", params=VARIANTS)
def imported(request, tmp_path_factory):
    variant = request.param
    tmp = tmp_path_factory.mktemp(variant[:20])
    state = published_state(variant)
    ckpt = tmp / "model.pt"
    torch.save(state, ckpt)
    reference = ReferenceModel(50 if "ResNet50_audio" in variant else 18)
    reference.load_state_dict(state, strict=True)  # the layout is exactly the documented network
    bundle = convert(ckpt, tmp / "bundle")
    return variant, reference.eval(), bundle_mod.load(bundle.path)


def test_architecture_is_inferred_from_shapes(imported):
    variant, _, bundle = imported
    spec = bundle.encoder_spec("image_encoder")
    assert spec.stem_width == 32 and tuple(spec.widths) == (64, 182, 256, 512)
    assert spec.block == ("bottleneck" if "ResNet50_audio" in variant else "basic")
    audio = bundle.encoder_spec("audio_encoder")
    assert audio.in_channels == 1 and audio.block == "basic" and audio.embed_dim == 128
    assert bundle.distance == "euclidean" and bundle.image_input.tile_size == 192
    assert bundle.audio_config.level_encoding == "soundingearth"
    assert "384 px centre crop of 1024 px" in bundle.image_input.note


def test_embeddings_equal_the_reference_network(imported):
    _, reference, bundle = imported
    torch.manual_seed(1)
    images = torch.randn(3, 3, 192, 192)
    chunks = torch.randn(4, 1, 128, 128)
    with torch.no_grad():
        want_img = reference.img_encoder.module_list[0](images)
        want_snd = reference.snd_encoder.module_list[0](chunks)
        got_img = image_encoder_from_bundle(bundle)(images)
        got_snd = audio_encoder_from_bundle(bundle)(chunks)
    assert got_img.shape == (3, 128) and got_snd.shape == (4, 128)
    assert torch.isfinite(got_img).all() and torch.isfinite(got_snd).all()
    for got, want in ((got_img, want_img), (got_snd, want_snd)):
        rel = (got - want).norm() / want.norm()
        assert rel < 1e-5


def test_head_then_mean_equals_mean_then_head():
    net = ReferenceImageEncoder(BasicBlock, [2, 2, 2, 2], in_channels=3).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        f = net.feature_map(x)
        head_then_mean = net.fc(f).mean(dim=(2, 3))
        mean_then_head = net.fc(f.mean(dim=(2, 3), keepdim=True))[:, :, 0, 0]
    torch.testing.assert_close(head_then_mean, mean_then_head, rtol=1e-5, atol=1e-6)


def _checkpoint(tmp_path, state) -> str:
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("img_encoder.module_list.0.layer2.0.conv1.weight"), "image encoder"),
    (lambda s: s.update({"snd_encoder.module_list.0.fc.weight": torch.zeros(64, 512, 1, 1),
                         "snd_encoder.module_list.0.fc.bias": torch.zeros(64)}), "differ in size"),
    (lambda s: s.__setitem__("img_encoder.module_list.1.weight", torch.zeros(3)), "unexpected encoder tensor"),
    (lambda s: s.__setitem__("img_encoder.module_list.0.layer1.0.bn1.weight", torch.zeros(7)), "shape"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("snd_encoder")], "no audio encoder"),
])
def test_bad_checkpoints_get_one_line_errors_and_write_nothing(tmp_path, damage, message):
    state = published_state(VARIANTS[0])
    damage(state)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=message) as info:
        convert(_checkpoint(tmp_path, state), out)
    assert "\n" not in str(info.value) and "bad.pt" in str(info.value)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.pt"]


class NotATensor:
    pass


def test_a_pickle_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": NotATensor()}, path)
    with pytest.raises(CheckpointError) as info:
        convert(path, tmp_path / "out")
    assert str(info.value) == (f"{path}: not a plain tensor checkpoint (loading it would need to run code: "
                               f"it refers to {NotATensor.__module__}.NotATensor)")
    assert not (tmp_path / "out").exists()


def declare_size(path, member: str, size: int) -> None:
    """Rewrite the uncompressed size the zip's central directory gives ``member`` (nothing else)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_length = int.from_bytes(data[at + 28:at + 30], "little")
        if data[at + 46:at + 46 + name_length].endswith(member.encode()):
            data[at + 24:at + 28] = size.to_bytes(4, "little")
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def _two_gib_bomb(path):
    torch.save({"w": torch.zeros(4)}, path)
    declare_size(path, "/data/0", 2 ** 31)  # a 2 GiB tensor, as the archive's index says


def _no_pickle(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data/0", b"\0" * 16)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "empty file, not a checkpoint"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not a PyTorch checkpoint (not the zip archive"),
    (lambda p: p.write_bytes(p.with_name("good.pt").read_bytes()[:3000]), "not a PyTorch checkpoint (not the zip"),
    (_no_pickle, "not a PyTorch checkpoint (a zip archive without data.pkl)"),
    (_two_gib_bomb, "holds 2.00 GiB of data, more than the limit of 1.00 GiB"),
])
def test_files_that_are_not_checkpoints_are_one_line_before_loading(tmp_path, make, message):
    torch.save(published_state(VARIANTS[0]), tmp_path / "good.pt")
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        convert(path, tmp_path / "out")
    text = str(info.value)
    assert text.startswith(f"{path}: {message}") and "\n" not in text and "weights_only" not in text
    assert not (tmp_path / "out").exists()


def test_the_size_limit_is_read_from_the_index_and_can_be_lifted(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(published_state(VARIANTS[0]), path)
    size = check_archive(path)
    assert size > 10 * 2 ** 20 and size == sum(m.file_size for m in zipfile.ZipFile(path).infolist())
    with pytest.raises(CheckpointError, match=r"holds 0\.\d\d GiB of data, more than the limit of 0\.00 GiB"):
        convert(path, tmp_path / "a", max_bytes=2 ** 20)
    assert convert(path, tmp_path / "b", max_bytes=None).embedding_dim == 128


def test_command_line(tmp_path):
    ckpt = _checkpoint(tmp_path, published_state(VARIANTS[0]))
    ok = subprocess.run([sys.executable, "-m", "model.import_soundingearth", ckpt, "--out", str(tmp_path / "b")],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "stem 32" in ok.stdout and (tmp_path / "b" / "bundle.json").is_file()
    bad = subprocess.run([sys.executable, "-m", "model.import_soundingearth", str(tmp_path / "missing.pt"),
                          "--out", str(tmp_path / "c")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "missing.pt" in bad.stderr
    (tmp_path / "empty.pt").write_bytes(b"")
    empty = subprocess.run([sys.executable, "-m", "model.import_soundingearth", str(tmp_path / "empty.pt"),
                            "--out", str(tmp_path / "d")], cwd=ROOT, capture_output=True, text=True)
    assert empty.returncode == 2 and empty.stderr == f"error: {tmp_path / 'empty.pt'}: empty file, not a checkpoint\n"


def test_the_runs_config_beside_the_checkpoint_settles_the_distance(tmp_path):
    import model.bundle as bundle_mod

    ckpt = _checkpoint(tmp_path, published_state(VARIANTS[0]))
    config = tmp_path / "config.yml"
    config.write_text("DataRoot: /data/aporee/aporee\nLossFunction: SymmetricCL\nSoundReducer: RandomAudioSample\n"
                      "MaxSamples: 1\n")

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "model.import_soundingearth", ckpt, *extra],
                              cwd=ROOT, capture_output=True, text=True)

    ok = run("--out", str(tmp_path / "b"))
    assert ok.returncode == 0, ok.stderr
    assert "config.yml: LossFunction SymmetricCL -> cosine distance" in ok.stdout
    assert "SoundReducer RandomAudioSample is not reproduced" in ok.stdout and "MaxSamples 1" in ok.stdout
    bundle = bundle_mod.load(tmp_path / "b")
    assert bundle.distance == "cosine"
    assert bundle.meta["provenance"]["reference_config"] == {"file": "config.yml", "LossFunction": "SymmetricCL",
                                                             "SoundReducer": "RandomAudioSample", "MaxSamples": 1}
    clash = run("--out", str(tmp_path / "c"), "--distance", "euclidean")
    assert clash.returncode == 2 and clash.stderr.count("\n") == 1 and "SymmetricCL" not in clash.stderr
    assert "compares embeddings by cosine distance, but --distance euclidean was given" in clash.stderr
    assert not (tmp_path / "c").exists()
    assert run("--out", str(tmp_path / "d"), "--no-config").returncode == 0
    assert bundle_mod.load(tmp_path / "d").distance == "euclidean"
    config.write_text("LossFunction: DeepHashingLoss\n")
    hashing = run("--out", str(tmp_path / "e"))
    assert hashing.returncode == 2 and "DeepHashingLoss compares the signs" in hashing.stderr


def test_the_reference_resize_is_recorded_and_used_by_evaluation(tmp_path):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    from model.bundle.image_input import ImageInput
    from model.data.transforms import EvalTransform

    ckpt = _checkpoint(tmp_path, published_state(VARIANTS[0]))
    bundle = convert(ckpt, tmp_path / "b", reference_resize=True)
    assert bundle.image_input.antialias is False
    assert json.loads((tmp_path / "b" / "bundle.json").read_text())["image_input"]["antialias"] is False
    assert "antialias" not in ImageInput().to_dict()  # the default keeps bundle.json (and hashes) as before
    region = torch.randint(0, 256, (3, 384, 384), dtype=torch.uint8)
    plain = F.resize(region, [192, 192], interpolation=InterpolationMode.BILINEAR, antialias=False)
    expected = (plain.float() / 255 - torch.tensor(bundle.image_input.mean)[:, None, None]) / \
        torch.tensor(bundle.image_input.std)[:, None, None]
    got = EvalTransform(bundle.image_input)(region)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(EvalTransform(ImageInput(tile_size=192))(region), expected, atol=1e-3)
