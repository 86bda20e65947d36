"""model.bundle.tensor_file: a bundle's tensors are read from weights.safetensors when first used."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from safetensors.numpy import load_file

from model.bundle import BundleError, load
from model.bundle.tensor_file import TensorFile
from tests.bundles import full_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return full_bundle(tmp_path_factory.mktemp("tensor_file") / "bundle").path


def test_loading_reads_only_what_the_checks_need(bundle_dir):
    """Checking a bundle reads the header and the soundscape prototypes, not the encoders' weights."""
    bundle = load(bundle_dir)
    assert isinstance(bundle.tensors, TensorFile)
    assert bundle.tensors.read == ["soundscape.prototypes"]
    assert any(k.startswith("audio_encoder.") for k in bundle.tensors)
    image = bundle.part_tensors("image_encoder")  # reads the image encoder, and only it
    assert all(not k.startswith("audio_encoder.") for k in bundle.tensors.read) and len(image) > 10


def test_tensors_equal_the_files_and_are_read_once(bundle_dir):
    tensors, whole = TensorFile(bundle_dir / "weights.safetensors"), load_file(str(bundle_dir / "weights.safetensors"))
    assert sorted(tensors) == sorted(whole) and len(tensors) == len(whole)
    name = "image_encoder.conv1.weight"
    assert tensors.shape(name) == whole[name].shape and name in tensors and "nothing" not in tensors
    arrays = []
    threads = [threading.Thread(target=lambda: arrays.append(tensors[name])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is arrays[0] for a in arrays)  # one copy, however many threads asked at once
    for key in whole:
        np.testing.assert_array_equal(tensors[key], whole[key])
    with pytest.raises(KeyError):
        tensors["nothing"]


def test_a_truncated_weights_file_is_one_line_at_load(bundle_dir, tmp_path):
    import shutil

    broken = tmp_path / "bundle"
    shutil.copytree(bundle_dir, broken)
    data = (broken / "weights.safetensors").read_bytes()
    (broken / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"weights\.safetensors: unreadable safetensors file") as e:
        load(broken)
    assert "\n" not in str(e.value)
