"""Image transforms built from an ImageInput: a bundle's mean and std reach the training and
evaluation transforms, and evaluation preprocessing equals what inference does on the same tile."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import model.bundle as bundle_mod
from model.bundle.image_input import IMAGENET_MEAN, IMAGENET_STD
from model.data import SoundingEarthDataset
from model.data.transforms import EvalTransform, TrainAugment, centre_region, read_image, resize_square
from model.nn.init import resolve_init
from model.synth.pairs import write_pairs
from model.train.classify import ClassImageDataset

from tests.bundles import RGB, tiny_bundle

STATS = dict(mean=(0.3, 0.35, 0.4), std=(0.15, 0.2, 0.25))  # not ImageNet's


@pytest.fixture(scope="module")
def custom_bundle(tmp_path_factory) -> Path:
    """A small image-only bundle (64 px tiles) whose image input has non-ImageNet mean and std."""
    base = tmp_path_factory.mktemp("bundles")
    source = bundle_mod.load(tiny_bundle(base / "imagenet", audio=False).path)
    meta = copy.deepcopy(source.meta)
    meta["image_input"] = replace(source.image_input, **STATS).to_dict()
    return bundle_mod.save(base / "custom", meta, source.tensors).path


def as_column(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[:, None, None]


def test_training_transform_uses_the_init_bundles_statistics(custom_bundle):
    image_input = resolve_init(str(custom_bundle), "resnet18", None).image_input
    assert (image_input.mean, image_input.std) == (STATS["mean"], STATS["std"])
    imagenet = replace(image_input, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    region = centre_region(read_image(RGB), 0.5)  # the Landsat scene in the middle of the file
    ours = TrainAugment(image_input)(region, np.random.default_rng(7))
    theirs = TrainAugment(imagenet)(region, np.random.default_rng(7))  # the same draws
    assert ours.shape == theirs.shape == (3, 64, 64)
    # the same augmented pixels x in [0, 1], normalised differently: (x - mean) / std per band
    unit = theirs * as_column(IMAGENET_STD) + as_column(IMAGENET_MEAN)
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5 and unit.std() > 0.02
    expected = (unit - as_column(STATS["mean"])) / as_column(STATS["std"])
    assert torch.allclose(ours, expected, atol=1e-4)
    assert (ours - theirs).abs().mean() > 0.1


def test_eval_transform_equals_inference_on_the_same_tile(custom_bundle):
    image_input = bundle_mod.load(custom_bundle).image_input
    tile = resize_square(centre_region(read_image(RGB), 1.0), image_input.tile_size)  # uint8 (3, 64, 64)
    inference = torch.from_numpy(image_input.normalise(tile.permute(1, 2, 0).numpy()[None])[0])
    assert torch.equal(EvalTransform(image_input)(tile), inference)
    # a fine-tuning dataset fed the init bundle's input makes the same tile from the image file
    image, label = ClassImageDataset([RGB], [3], image_input, augment=False)[0]
    assert label == 3 and torch.equal(image, inference)
    imagenet = EvalTransform(replace(image_input, mean=IMAGENET_MEAN, std=IMAGENET_STD))(tile)
    assert not torch.allclose(imagenet, inference, atol=0.05)


def test_pairs_dataset_normalises_with_the_bundle_input(custom_bundle, tmp_path):
    image_input = bundle_mod.load(custom_bundle).image_input
    pairs = write_pairs(tmp_path / "pairs", 2, size=64, seed=0, duration=(3.0, 3.0), workers=1, progress=False)
    ds = SoundingEarthDataset(pairs, split="all", image_input=image_input, image_cache=False,
                              random_audio_chunk=False)
    assert ds.image_size == image_input.tile_size and ds.image_input == image_input
    key = ds.keys[0]
    tile = resize_square(ds.image_region(key), image_input.tile_size)
    inference = image_input.normalise(tile.permute(1, 2, 0).numpy()[None])[0]
    assert np.array_equal(ds[0]["image"].numpy(), inference)
    # another output size keeps the bundle's statistics
    small = SoundingEarthDataset(pairs, split="all", image_input=image_input, image_size=32, image_cache=False,
                                 random_audio_chunk=False)
    assert small[0]["image"].shape == (3, 32, 32)
    assert (small.image_input.mean, small.image_input.std) == (STATS["mean"], STATS["std"])
