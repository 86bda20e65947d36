"""Image transforms built from an ImageInput: a bundle's mean and std reach the training and
evaluation transforms, and evaluation preprocessing equals what inference does on the same tile."""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import model.bundle as bundle_mod
from model.bundle.image_input import IMAGENET_MEAN, IMAGENET_STD, ImageInput
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


# ---- the reference code's augmentation (--augment reference) -------------------------------------

SIDE = 64  # output side of the reference-augmentation tests


def coordinate_region(side: int = 128, flip: bool = False) -> torch.Tensor:
    """uint8 (3, side, side) whose HSV colour encodes the position: value 0.3-0.8 grows with x, hue
    0-0.5 of a turn grows with y, saturation 1. HSV shifts move hue and value by constants, so the
    local gradients of (value, hue) still give the source's x and y directions after augmentation."""
    from model.data.transforms import hsv_to_rgb

    ramp = torch.linspace(0.0, 1.0, side, dtype=torch.float64)
    y, x = torch.meshgrid(ramp, ramp, indexing="ij")
    rgb = hsv_to_rgb(0.5 * y, torch.ones_like(x), 0.3 + 0.5 * x)
    image = (rgb * 255).round().to(torch.uint8)
    return image.flip(-1) if flip else image


def handedness(output: torch.Tensor, image_input) -> tuple[float, float]:
    """(sign of det [grad value; grad hue], angle of grad value in degrees) over a 9 x 9 window at the
    centre of a normalised augmentation output. The centre always shows the region's own pixels:
    the rotation mirrors borders only outside its inscribed circle, and neither the crop nor the
    grid distortion (at most 30 % per cell) brings the border near the centre."""
    from model.data.transforms import rgb_to_hsv

    rgb = (output * as_column(image_input.std) + as_column(image_input.mean)).clamp(0, 1).double()
    hue, _, value = rgb_to_hsv(rgb)
    c = output.shape[-1] // 2
    window = slice(c - 4, c + 5)

    def gradient(f, wrap=False):
        dx = f[window, c - 3:c + 6] - f[window, c - 5:c + 4]
        dy = f[c - 3:c + 6, window] - f[c - 5:c + 4, window]
        if wrap:  # hue differences around the circle
            dx, dy = torch.remainder(dx + 0.5, 1.0) - 0.5, torch.remainder(dy + 0.5, 1.0) - 0.5
        return float(dx.mean()), float(dy.mean())

    vx, vy = gradient(value)
    hx, hy = gradient(hue, wrap=True)
    return float(np.sign(vx * hy - vy * hx)), math.degrees(math.atan2(vy, vx))


def test_reference_augmentation_is_seeded_and_keeps_shape_and_dtype():
    from model.data.transforms import ReferenceAugment

    augment = ReferenceAugment(ImageInput(tile_size=SIDE))
    region = centre_region(read_image(RGB), 0.5)
    first = augment(region, np.random.default_rng(3))
    assert first.shape == (3, SIDE, SIDE) and first.dtype == torch.float32
    assert torch.equal(first, augment(region, np.random.default_rng(3)))
    assert not torch.equal(first, augment(region, np.random.default_rng(4)))
    assert region.dtype == torch.uint8  # the input is not changed
    # each step maps uint8 pixels to uint8 pixels, as the reference's albumentations steps did
    image = region[:, :SIDE, :SIDE]
    for step in (augment.rotate(image, 33.0), augment.blur(image),
                 augment.grid_distortion(image, np.full(6, 0.2), np.full(6, -0.2)),
                 augment.hue_saturation_value(image, 10.0, -20.0, 15.0)):
        assert step.dtype == torch.uint8 and step.shape == image.shape


def test_reference_augmentation_rotates_at_any_angle_and_never_flips():
    from model.data.transforms import ReferenceAugment

    image_input = ImageInput(tile_size=SIDE)
    augment = ReferenceAugment(image_input)
    region, mirrored = coordinate_region(), coordinate_region(flip=True)
    assert handedness(EvalTransform(image_input)(resize_square(region, SIDE)), image_input)[0] == 1
    signs, angles = [], []
    for seed in range(24):
        sign, angle = handedness(augment(region, np.random.default_rng(seed)), image_input)
        signs.append(sign)
        angles.append(angle)
        # the same draws on the mirror image keep it mirrored
        assert handedness(augment(mirrored, np.random.default_rng(seed)), image_input)[0] == -1
    assert signs == [1] * 24  # rotated any way, never mirrored
    assert max(abs(a) for a in angles) > 135 and min(abs(a) for a in angles) < 45  # any angle, not 90-degree steps
    # our augmentation flips half the time: the measure sees flips
    ours = [handedness(TrainAugment(image_input)(region, np.random.default_rng(s)), image_input)[0] for s in range(24)]
    assert 1 in ours and -1 in ours


def test_reference_rotation_mirrors_borders_and_turns_counter_clockwise():
    from model.data.transforms import ReferenceAugment, remap

    g = torch.Generator().manual_seed(0)
    image = torch.randint(50, 200, (3, 32, 32), generator=g, dtype=torch.uint8)
    assert torch.equal(ReferenceAugment.rotate(image, 0.0), image)
    assert torch.equal(ReferenceAugment.rotate(image, 90.0), torch.rot90(image, 1, dims=(-2, -1)))
    assert ReferenceAugment.rotate(image, 45.0).min() >= 50  # corners filled from the image, not zeros
    # BORDER_REFLECT_101: mirrored about the edge pixel's centre, which is not repeated
    ramp = (torch.arange(8) * 20).to(torch.uint8).repeat(1, 8, 1)
    x, y = torch.meshgrid(torch.arange(8.0) - 1.0, torch.arange(8.0), indexing="xy")
    assert remap(ramp, x, y)[0, 0].tolist() == [20, 0, 20, 40, 60, 80, 100, 120]


def test_reference_blur_grid_distortion_and_hsv_follow_the_library_definitions():
    from model.data.transforms import ReferenceAugment, grid_distortion_coordinates

    # albumentations' grid: cells of 10 // 2 = 5 px, each from where the last ended (ends included)
    coords = grid_distortion_coordinates(10, 2, np.array([0.2, -0.2, 0.0]))
    assert coords.tolist() == [0.0, 1.5, 3.0, 4.5, 6.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    # a 3 x 3 box mean with mirrored borders (cv2.blur's default BORDER_REFLECT_101)
    image = torch.zeros(3, 5, 5, dtype=torch.uint8)
    image[:, 0, 0] = 90
    blurred = ReferenceAugment().blur(image)[0]
    # the corner is in its own window once (90 / 9), not four times as with a repeated edge
    assert (blurred[0, 0], blurred[0, 1], blurred[1, 1], blurred[2, 2]) == (10, 10, 10, 0)
    # hue in OpenCV's units (180 a turn): 60 turns red into green; saturation and value shifts clip
    red = torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None].repeat(1, 2, 2)
    assert ReferenceAugment.hue_saturation_value(red, 60.0, 0.0, 0.0)[:, 0, 0].tolist() == [0, 255, 0]
    assert ReferenceAugment.hue_saturation_value(red, 0.0, 30.0, 20.0)[:, 0, 0].tolist() == [255, 0, 0]
    assert ReferenceAugment.hue_saturation_value(red, 0.0, -51.0, -51.0)[:, 0, 0].tolist() == [204, 41, 41]
