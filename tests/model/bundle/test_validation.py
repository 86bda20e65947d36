"""Every number of bundle.json is held to its range at load: each corruption of a real random
bundle is one line naming the bundle, the field and the allowed range (model/bundle/validation.py)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from model.bundle import BundleError, load
from model.bundle.audio import AudioConfig, AudioError
from model.bundle.image_input import ImageInput, ImageInputError

from tests.bundles import LAND, ROOT, map_bundle


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A narrow 16-d bundle with an audio encoder and a four-class soundscape head."""
    return map_bundle(tmp_path_factory.mktemp("valid") / "bundle", gsd=0.5, landcover=False)


def corrupt(good, tmp_path, change):
    """A copy of ``good`` whose bundle.json was edited by ``change(meta)``."""
    path = tmp_path / "bad"
    shutil.copytree(good, path)
    meta = json.loads((path / "bundle.json").read_text())
    change(meta)
    (path / "bundle.json").write_text(json.dumps(meta))  # NaN and Infinity written as JSON allows them
    return path


def put(section, key, value):
    def change(meta):
        (meta[section] if section else meta)[key] = value
    return change


def class_list(value):
    return lambda meta: meta["heads"]["soundscape"].update(classes=value)


CASES = [
    ("image_input.tile_size", put("image_input", "tile_size", 10 ** 6)),
    ("image_input.tile_size", put("image_input", "tile_size", 0)),
    ("image_input.tile_size", put("image_input", "tile_size", 64.5)),
    ("image_input.gsd", put("image_input", "gsd", 1e-300)),
    ("image_input.gsd", put("image_input", "gsd", -0.5)),
    ("image_input.gsd", put("image_input", "gsd", math.nan)),
    ("image_input.gsd", put("image_input", "gsd", "0.5")),
    ("image_input.std[2]", put("image_input", "std", [0.2, 0.2, 0.0])),
    ("image_input.mean[0]", put("image_input", "mean", [math.inf, 0.4, 0.4])),
    ("image_input.mean", put("image_input", "mean", [0.5])),
    ("image_input.bands", put("image_input", "bands", "rgb")),
    ("image_input", put(None, "image_input", [192, 0.5])),
    ("embedding_dim", put(None, "embedding_dim", 10 ** 9)),
    ("embedding_dim", put(None, "embedding_dim", True)),
    ("image_encoder.in_channels", put("image_encoder", "in_channels", 1000)),
    ("image_encoder.in_channels", put("image_encoder", "in_channels", 4)),  # 3 bands
    ("image_encoder.widths[3]", put("image_encoder", "widths", [8, 16, 32, 10 ** 6])),
    ("audio_encoder.layers", put("audio_encoder", "layers", [1, 1])),
    ("audio_encoder.in_channels", put("audio_encoder", "in_channels", 3)),
    ("audio.n_fft", put("audio", "n_fft", 1_000_000_000)),
    ("audio.hop_length", put("audio", "hop_length", 0)),
    ("audio.hop_length", put("audio", "hop_length", 4096)),  # more than n_fft 2048
    ("audio.n_mels", put("audio", "n_mels", 100_000)),
    ("audio.sample_rate", put("audio", "sample_rate", 10)),
    ("audio.fmax", put("audio", "fmax", 20000.0)),  # above 22050 / 2
    ("audio.fmin", put("audio", "fmin", -5.0)),
    ("audio.chunk_frames", put("audio", "chunk_frames", 0)),
    ("audio.db_ref", put("audio", "db_ref", -1.0)),
    ("audio.db_offset", put("audio", "db_offset", 1e9)),
    ("heads", put(None, "heads", [])),
    ("heads.soundscape", lambda m: m["heads"].update(soundscape="birds")),
    ("heads.soundscape.classes[0]", class_list(["birds", "traffic", "water", "wind"])),
    ("heads.soundscape.classes", class_list([])),
    ("heads.soundscape.classes[1].color[0]", lambda m: m["heads"]["soundscape"]["classes"][1].update(color=[300, 0, 0])),
    ("heads.soundscape.classes[2].name", lambda m: m["heads"]["soundscape"]["classes"][2].update(name="birds")),
    ("heads.soundscape.temperature", lambda m: m["heads"]["soundscape"].update(temperature=0)),
    ("heads.landcover.tile_size", lambda m: m["heads"].update(landcover={
        "classes": [{"name": n, "color": c} for n, c in LAND], "tile_size": 10 ** 6, "gsd": 0.5})),
]


def test_the_random_bundle_is_valid(good):
    bundle = load(good)
    assert bundle.image_input.tile_size == 64 and bundle.audio_config.n_fft == 2048


@pytest.mark.parametrize("field, change", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_each_bad_number_is_one_line_naming_the_bundle_field_and_range(good, tmp_path, field, change):
    path = corrupt(good, tmp_path, change)
    with pytest.raises(BundleError) as info:
        load(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: bundle.json: {field}"), text
    assert "allowed:" in text


def test_numbers_are_checked_before_the_weights_are_read(good, tmp_path):
    path = corrupt(good, tmp_path, put("audio", "n_fft", 10 ** 9))
    (path / "weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(BundleError, match="audio.n_fft is 1000000000; allowed: a whole number from 16 to 65536"):
        load(path)


@pytest.mark.parametrize("build, error, field", [
    (lambda: AudioConfig(hop_length=0), AudioError, "audio.hop_length"),
    (lambda: AudioConfig(sample_rate=16000), AudioError, "audio.fmax"),  # fmax 11025 > 8000
    (lambda: ImageInput(std=(0.2, 0.2, 0.0)), ImageInputError, r"image_input.std\[2\]"),
    (lambda: ImageInput.from_dict({"bands": "rgb"}), ImageInputError, "image_input.bands"),
])
def test_configs_built_in_code_are_held_to_the_same_ranges(build, error, field):
    with pytest.raises(error, match=f"^{field} is .*; allowed: "):
        build()


def test_a_command_reading_the_bundle_says_one_line_and_exits_2(good, tmp_path):
    bad = corrupt(good, tmp_path, put("audio", "chunk_frames", 0))
    done = subprocess.run([sys.executable, "-m", "model.bundle", "merge", str(bad), str(good), "--out",
                           str(tmp_path / "merged")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {bad}: bundle.json: audio.chunk_frames is 0; "
                                   f"allowed: a whole number from 1 to 4096 (frames)")
