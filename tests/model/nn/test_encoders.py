"""Tests for model/nn/encoders.py: specs, torchvision-compatible weights, published checkpoints, audio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from model.nn.encoders import (
    AudioEncoder,
    EncoderSpec,
    EncoderSpecError,
    ResNetEncoder,
    build_audio_encoder,
    build_encoder,
    build_image_encoder,
    infer_spec,
)

LAYOUT = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "soundingearth-checkpoint-layout.json"
PUBLISHED_WIDTHS = (64, 182, 256, 512)


def _published_state_dict(variant: str, prefix: str) -> dict[str, torch.Tensor]:
    """Random tensors with the exact names and shapes of a published checkpoint, prefix stripped."""
    shapes = json.loads(LAYOUT.read_text())[variant]
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, shape in shapes.items():
        if name.startswith(prefix):
            key = name[len(prefix):]
            if key.endswith("num_batches_tracked"):
                out[key] = torch.tensor(7)
            elif key.endswith("running_var"):
                out[key] = torch.rand(shape, generator=g) + 0.5
            else:
                out[key] = torch.randn(shape, generator=g) * 0.1
    return out


# ---------------------------------------------------------------- specs


def test_from_arch_standard_shapes_and_json_round_trip():
    r18 = EncoderSpec.from_arch("resnet18")
    r50 = EncoderSpec.from_arch("resnet50", in_channels=1, embed_dim=64)
    assert (r18.block, r18.layers, r18.stem_width, r18.widths) == ("basic", (2, 2, 2, 2), 64, (64, 128, 256, 512))
    assert (r50.block, r50.layers, r50.in_channels, r50.embed_dim) == ("bottleneck", (3, 4, 6, 3), 1, 64)
    assert r18.feature_dim == 512 and r50.feature_dim == 2048
    assert EncoderSpec.from_arch("resnet34").layers == (3, 4, 6, 3)
    for spec in (r18, r50):
        d = json.loads(json.dumps(spec.to_dict()))
        assert isinstance(d["widths"], list)
        assert EncoderSpec.from_dict(d) == spec


@pytest.mark.parametrize(
    "make",
    [
        lambda: EncoderSpec.from_arch("resnet101"),
        lambda: EncoderSpec("resnet18", "basic", (2, 2, 2, 2), 32, PUBLISHED_WIDTHS, 3),  # arch lies
        lambda: EncoderSpec("custom", "wide", (2, 2, 2, 2), 32, PUBLISHED_WIDTHS, 3),
        lambda: EncoderSpec("custom", "basic", (2, 2, 2), 32, PUBLISHED_WIDTHS, 3),
        lambda: EncoderSpec("custom", "basic", (2, 2, 2, 2), 0, PUBLISHED_WIDTHS, 3),
        lambda: EncoderSpec.from_dict({"arch": "resnet18"}),
        lambda: EncoderSpec.from_arch("resnet18").replace(depth=3),
    ],
)
def test_bad_specs_raise_one_line_errors(make):
    with pytest.raises(EncoderSpecError) as info:
        make()
    assert "\n" not in str(info.value)


def test_overrides_rename_arch_and_build_published_shape():
    enc = build_image_encoder("resnet18", stem_width=32, widths=PUBLISHED_WIDTHS)
    assert enc.spec.arch == "custom" and enc.conv1.out_channels == 32
    assert enc.layer1[0].downsample is not None  # 32 stem channels -> 64 planes needs a projection
    assert build_image_encoder("resnet18").layer1[0].downsample is None
    assert build_image_encoder("resnet50").layer1[0].downsample is not None  # 64 -> 256
    assert enc(torch.randn(2, 3, 64, 64)).shape == (2, 128)


# ---------------------------------------------------------------- weights move without renaming


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_backbone_loads_into_torchvision_and_forward_matches(arch):
    torch.manual_seed(0)
    enc = build_image_encoder(arch, embed_dim=16).eval()
    tv = getattr(torchvision.models, arch)(weights=None)
    result = tv.load_state_dict(enc.backbone_state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and result.unexpected_keys == []
    tv.fc = torch.nn.Linear(enc.spec.feature_dim, 16)
    tv.load_state_dict(enc.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(enc(x), tv.eval()(x), rtol=1e-4, atol=1e-5)


def test_backbone_loads_into_smp_and_timm():
    import segmentation_models_pytorch as smp
    import timm

    torch.manual_seed(0)
    enc = build_image_encoder("resnet18").eval()
    smp_encoder = smp.encoders.get_encoder("resnet18", weights=None)
    smp_encoder.load_state_dict(enc.backbone_state_dict(), strict=True)
    timm_model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    timm_model.load_state_dict(enc.backbone_state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    expected = enc.features(x)
    torch.testing.assert_close(smp_encoder.eval()(x)[-1], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(timm_model.eval().forward_features(x), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- inferring specs


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_infer_spec_round_trips_standard_specs(arch):
    spec = EncoderSpec.from_arch(arch, in_channels=4, embed_dim=32)
    with torch.device("meta"):
        state = build_encoder(spec).state_dict()
    prefixed = {f"image_encoder.{k}": v for k, v in state.items()}
    assert infer_spec(prefixed, prefix="image_encoder.") == spec


@pytest.mark.parametrize(
    ("variant", "prefix", "block", "layers", "channels"),
    [
        ("image_encoder_ResNet18_audio_encoder_ResNet18", "img_encoder.module_list.0.", "basic", (2, 2, 2, 2), 3),
        ("image_encoder_ResNet50_audio_encoder_ResNet18", "img_encoder.module_list.0.", "bottleneck", (3, 4, 6, 3), 3),
        ("image_encoder_ResNet50_audio_encoder_ResNet18", "snd_encoder.module_list.0.", "basic", (2, 2, 2, 2), 1),
    ],
)
def test_published_checkpoints_are_inferred_and_load(variant, prefix, block, layers, channels):
    state = _published_state_dict(variant, prefix)
    spec = infer_spec(state)
    assert spec == EncoderSpec("custom", block, layers, 32, PUBLISHED_WIDTHS, channels, 128)
    enc = (AudioEncoder if channels == 1 else ResNetEncoder)(spec)
    enc.load_state_dict(state, strict=True)  # fc.weight arrives as a (128, C, 1, 1) conv weight
    enc.eval()
    torch.testing.assert_close(enc.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    # The reference head: 1x1 conv on the feature map, then the spatial mean.
    x = torch.randn(2, channels, 64, 64)
    reference = F.conv2d(enc.features(x), state["fc.weight"], state["fc.bias"]).mean(dim=(2, 3))
    torch.testing.assert_close(enc(x), reference, rtol=1e-4, atol=1e-5)


def _meta_state(spec: EncoderSpec) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return dict(build_encoder(spec).state_dict())


def test_infer_spec_rejects_inconsistent_state_dicts():
    spec = EncoderSpec.from_arch("resnet18")
    cases = {}
    missing = _meta_state(spec)
    del missing["layer2.1.bn1.weight"]
    cases["layer2.1.bn1.weight"] = missing
    reshaped = _meta_state(spec)
    reshaped["layer3.0.conv2.weight"] = torch.empty(256, 200, 3, 3, device="meta")
    cases["layer3.0.conv2.weight"] = reshaped
    gap = {k.replace("layer3.1.", "layer3.2."): v for k, v in _meta_state(spec).items()}
    cases["layer3"] = gap
    no_fc = {k: v for k, v in _meta_state(spec).items() if not k.startswith("fc.")}
    cases["fc.weight"] = no_fc
    cases["conv1.weight"] = {"weights": torch.empty(3)}
    for needle, state in cases.items():
        with pytest.raises(EncoderSpecError) as info:
            infer_spec(state)
        message = str(info.value)
        assert needle in message and "\n" not in message


# ---------------------------------------------------------------- forward details


def test_channels_last_input_and_model_give_same_embedding():
    torch.manual_seed(0)
    enc = build_image_encoder("resnet18").eval()
    x = torch.randn(3, 3, 64, 64)
    expected = enc(x)
    torch.testing.assert_close(enc(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)
    enc = enc.to(memory_format=torch.channels_last)
    torch.testing.assert_close(enc(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


def test_wrong_input_channels_raise():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        build_audio_encoder()(torch.randn(1, 3, 64, 64))


def test_embed_recordings_is_mean_of_chunk_embeddings():
    torch.manual_seed(0)
    enc = build_audio_encoder("resnet18", embed_dim=8).eval()
    assert isinstance(enc, AudioEncoder) and enc.spec.in_channels == 1
    chunks = torch.randn(5, 1, 128, 128)
    counts = [2, 1, 2]
    with torch.no_grad():
        out = enc.embed_recordings(chunks, counts)
        batched = enc.embed_recordings(chunks, torch.tensor(counts), batch_size=2)
        per_chunk = enc(chunks)
    expected = torch.stack([per_chunk[0:2].mean(0), per_chunk[2], per_chunk[3:5].mean(0)])
    assert out.shape == (3, 8)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("counts", [[2, 2], [5, 0], []])
def test_embed_recordings_rejects_bad_counts(counts):
    enc = build_audio_encoder("resnet18")
    with pytest.raises(ValueError, match="counts"):
        enc.embed_recordings(torch.randn(5, 1, 32, 32), counts)
