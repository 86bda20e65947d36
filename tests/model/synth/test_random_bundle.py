"""model.synth.random_bundle: random-initialised bundles that load, carry the requested parts and are seeded."""
from __future__ import annotations

import numpy as np
import pytest

from model.bundle import BundleError, load
from model.core.cli import run_cli
from model.synth.random_bundle import class_entries, main, random_bundle

NARROW = dict(layers=(1, 1, 1, 1), stem_width=8, widths=(8, 8, 16, 16))


def test_bundle_has_the_requested_heads_classes_and_input(tmp_path):
    b = random_bundle(tmp_path / "b", dim=8, tile_size=32, gsd=2.5, soundscape_classes=["birds", "wind", "rain"],
                      temperature=0.25, landcover_classes=2, decoder={"decoder_channels": 16}, distance="cosine")
    b = load(b.path)
    assert b.embedding_dim == 8 and b.distance == "cosine" and b.has("audio_encoder")
    assert (b.image_input.tile_size, b.image_input.gsd) == (32, 2.5)
    sound, land = b.heads["soundscape"], b.heads["landcover"]
    assert [c["name"] for c in sound["classes"]] == ["birds", "wind", "rain"] and sound["temperature"] == 0.25
    assert b.tensors["soundscape.prototypes"].shape == (3, 8)
    assert [c["name"] for c in land["classes"]] == ["land0", "land1"]
    assert (land["tile_size"], land["gsd"], land["decoder"]) == (32, 2.5, {"decoder_channels": 16})
    from model.nn.landcover import segmenter_from_bundle

    segmenter_from_bundle(b)  # the decoder fits the standard resnet18 image encoder


def test_bare_bundle_has_only_the_image_encoder(tmp_path):
    b = load(random_bundle(tmp_path / "b", dim=4, image_overrides=NARROW, audio=False).path)
    assert not b.has("audio_encoder") and b.heads == {}
    assert b.encoder_spec("image_encoder").widths == (8, 8, 16, 16)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    kw = dict(dim=4, image_overrides=NARROW, audio_overrides=NARROW, soundscape_classes=3)
    a, b = random_bundle(tmp_path / "a", seed=1, **kw), random_bundle(tmp_path / "b", seed=1, **kw)
    c = random_bundle(tmp_path / "c", seed=2, **kw)
    assert a.tensors.keys() == b.tensors.keys() == c.tensors.keys()
    assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert not np.array_equal(a.tensors["image_encoder.conv1.weight"], c.tensors["image_encoder.conv1.weight"])
    assert not np.array_equal(a.tensors["soundscape.prototypes"], c.tensors["soundscape.prototypes"])
    # the image encoder depends on the seed alone, not on the other parts; audio_seed changes audio only
    d = random_bundle(tmp_path / "d", seed=1, dim=4, image_overrides=NARROW, audio=False)
    assert np.array_equal(a.tensors["image_encoder.fc.weight"], d.tensors["image_encoder.fc.weight"])
    e = random_bundle(tmp_path / "e", seed=1, audio_seed=5, **kw)
    assert np.array_equal(a.tensors["image_encoder.fc.weight"], e.tensors["image_encoder.fc.weight"])
    assert not np.array_equal(a.tensors["audio_encoder.fc.weight"], e.tensors["audio_encoder.fc.weight"])


def test_global_torch_random_state_is_left_alone(tmp_path):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    random_bundle(tmp_path / "b", dim=4, image_overrides=NARROW, audio=False)
    assert torch.equal(torch.rand(3), expected)


def test_class_entries_fill_in_colours():
    entries = class_entries([{"name": "a", "color": [1, 2, 3]}, "b"])
    assert entries[0] == {"name": "a", "color": [1, 2, 3]} and entries[1]["name"] == "b"
    assert len(entries[1]["color"]) == 3 and all(0 <= v <= 255 for v in entries[1]["color"])
    assert [e["name"] for e in class_entries(2, "x")] == ["x0", "x1"]


def test_existing_folder_is_refused_unless_overwritten(tmp_path):
    random_bundle(tmp_path / "b", dim=4, image_overrides=NARROW, audio=False)
    with pytest.raises(BundleError, match="already exists"):
        random_bundle(tmp_path / "b", dim=4, image_overrides=NARROW, audio=False)
    assert random_bundle(tmp_path / "b", dim=4, image_overrides=NARROW, audio=False, seed=3, overwrite=True).has(
        "image_encoder")


def test_cli_writes_a_bundle_and_errors_in_one_line(tmp_path, capsys):
    out = tmp_path / "cli"
    assert run_cli(lambda: main(["--out", str(out), "--dim", "4", "--no-audio", "--soundscape-classes", "2"])) == 0
    b = load(out)
    assert b.embedding_dim == 4 and list(b.heads) == ["soundscape"] and not b.has("audio_encoder")
    assert run_cli(lambda: main(["--out", str(out)])) == 2
    assert run_cli(lambda: main(["--out", str(tmp_path / "x"), "--dim", "0"])) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2 and "--overwrite" in errors[0] and "0" in errors[1]
    assert not (tmp_path / "x").exists()
    # a resnet34 (no smp encoder of its own) gets a land-cover head built from its spec
    assert run_cli(lambda: main(["--out", str(tmp_path / "r34"), "--arch", "resnet34", "--landcover-classes", "2"])) == 0
    assert load(tmp_path / "r34").heads["landcover"]["encoder_name"] == "spec"
