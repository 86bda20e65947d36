"""The DeepLabV3+ land-cover head on any ResNet encoder spec: smp's own encoders for the standard
widths (unchanged), ``ResNetFeatures`` built from the spec for any other (the published
SoundingEarth widths), and the ``"spec"`` head entry a bundle records for it."""
from __future__ import annotations

import json

import pytest
import torch

from model.bundle import BundleError, encoder_tensors, load, make_meta, save
from model.bundle.image_input import ImageInput
from model.nn.encoders import (
    EncoderSpec,
    EncoderSpecError,
    ResNetEncoder,
    ResNetFeatures,
    build_image_encoder,
)
from model.nn.landcover import (
    LandcoverError,
    build_segmenter,
    landcover_meta,
    landcover_tensors,
    segmenter_from_bundle,
)

CLASSES = [{"name": n, "color": c} for n, c in (("urban", [0, 255, 255]), ("water", [0, 0, 255]),
                                                ("forest", [0, 255, 0]))]
PUBLISHED = {"stem_width": 32, "widths": (64, 182, 256, 512)}  # the SoundingEarth checkpoints' image encoders
DECODER = {"decoder_channels": 16}


def _published(arch: str = "resnet18") -> EncoderSpec:
    return EncoderSpec.from_arch(arch).replace(**PUBLISHED)


def _randomise_decoder_statistics(segmenter: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so that a reload that misses them shows."""
    with torch.no_grad():
        for m in segmenter.decoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("arch, output_stride", [("resnet18", 16), ("resnet18", 8), ("resnet50", 16)])
def test_feature_encoder_equals_smps_resnet_on_a_standard_spec(arch, output_stride):
    smp_encoder = build_segmenter(arch, 2, encoder_output_stride=output_stride).encoder
    ours = ResNetFeatures(EncoderSpec.from_arch(arch), output_stride=output_stride).eval()
    ours.load_state_dict(smp_encoder.state_dict(), strict=True)  # torchvision names on both sides
    assert tuple(ours.out_channels) == tuple(smp_encoder.out_channels)
    assert ours.output_stride == smp_encoder.output_stride == output_stride
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(smp_encoder(x), ours(x), strict=True):
            assert torch.equal(a, b)


def test_feature_encoder_of_the_published_widths():
    spec = _published()
    features = ResNetFeatures(spec, output_stride=16).eval()
    assert features.state_dict().keys() == ResNetEncoder(spec).backbone_state_dict().keys()
    with torch.no_grad():
        shapes = [tuple(f.shape) for f in features(torch.zeros(2, 3, 64, 64))]
    assert shapes == [(2, 3, 64, 64), (2, 32, 32, 32), (2, 64, 16, 16), (2, 182, 8, 8), (2, 256, 4, 4),
                      (2, 512, 4, 4)]  # layer4 dilated: stride 16, not 32
    assert ResNetFeatures(spec, depth=4).out_channels == (3, 32, 64, 182, 256)
    with pytest.raises(EncoderSpecError, match="output stride"):
        ResNetFeatures(spec, output_stride=4)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_a_segmenter_builds_on_the_published_widths(arch):
    spec = _published(arch)
    segmenter = build_segmenter(spec, len(CLASSES), **DECODER)
    assert isinstance(segmenter.encoder, ResNetFeatures) and not segmenter.training
    segmenter.encoder.load_state_dict(ResNetEncoder(spec).backbone_state_dict(), strict=True)
    with torch.no_grad():
        assert segmenter(torch.randn(1, 3, 64, 64)).shape == (1, len(CLASSES), 64, 64)


def test_a_standard_spec_builds_exactly_the_smp_segmenter_and_meta():
    spec = EncoderSpec.from_arch("resnet18")
    torch.manual_seed(3)
    by_name = build_segmenter("resnet18", 3, **DECODER)
    torch.manual_seed(3)
    by_spec = build_segmenter(spec, 3, **DECODER)
    assert type(by_spec.encoder) is type(by_name.encoder)
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), by_spec.state_dict().values()))
    assert landcover_meta(CLASSES, spec, 64, 0.5, DECODER) == landcover_meta(CLASSES, "resnet18", 64, 0.5, DECODER)
    assert "encoder" not in landcover_meta(CLASSES, "resnet18", 64, 0.5, DECODER)


def _spec_bundle(path, spec: EncoderSpec, seed: int = 1):
    """A bundle whose image encoder has ``spec`` and whose land-cover head sits on it; also returns
    the segmenter it was written from."""
    torch.manual_seed(seed)
    image = ResNetEncoder(spec)
    segmenter = build_segmenter(spec, len(CLASSES), **DECODER)
    segmenter.encoder.load_state_dict(image.backbone_state_dict(), strict=True)
    _randomise_decoder_statistics(segmenter)
    head = landcover_meta(CLASSES, spec, 64, 0.5, DECODER)
    meta = make_meta(image_spec=spec, distance="euclidean", image_input=ImageInput(tile_size=64),
                     heads={"landcover": head})
    return save(path, meta, {**encoder_tensors("image_encoder", image), **landcover_tensors(segmenter)}), segmenter


def test_a_published_width_head_round_trips_through_a_bundle(tmp_path):
    bundle, segmenter = _spec_bundle(tmp_path / "b", _published())
    head = json.loads((tmp_path / "b" / "bundle.json").read_text())["heads"]["landcover"]
    assert head["encoder_name"] == "spec"
    assert head["encoder"] == {"arch": "custom", "block": "basic", "layers": [2, 2, 2, 2], "stem_width": 32,
                               "widths": [64, 182, 256, 512], "in_channels": 3}
    reloaded = segmenter_from_bundle(load(bundle.path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(segmenter.eval()(x), reloaded(x))


def test_a_spec_head_must_fit_the_image_encoder(tmp_path):
    bundle, _ = _spec_bundle(tmp_path / "b", _published())
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    meta["heads"]["landcover"]["encoder"]["stem_width"] = 48
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(LandcoverError, match="made for the encoder") as e:
        segmenter_from_bundle(load(bundle.path))
    assert len(str(e.value).splitlines()) == 1
    del meta["heads"]["landcover"]["encoder"]
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(LandcoverError, match="no valid encoder spec"):
        segmenter_from_bundle(load(bundle.path))
    meta["heads"]["landcover"]["encoder"] = {**_published().to_dict(), "stem_width": 0}
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="heads.landcover.encoder.stem_width"):
        load(bundle.path)


def test_a_head_needs_an_rgb_encoder_and_a_known_encoder_name():
    with pytest.raises(LandcoverError, match="RGB"):
        build_segmenter(_published().replace(in_channels=1), 2)
    with pytest.raises(LandcoverError, match="encoder must be one of"):
        landcover_meta(CLASSES, "resnet34", 64, 0.5)
    assert landcover_meta(CLASSES, build_image_encoder("resnet34").spec, 64, 0.5)["encoder_name"] == "spec"
