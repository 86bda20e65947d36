"""Image preprocessing and augmentation, as the reference fed the published SoundingEarth models.

Transforms are built from the encoder's :class:`~model.bundle.image_input.ImageInput` (the way
timm builds them from a model's data config): its ``tile_size`` is the output side ``S`` and its
``mean`` / ``std`` the normalisation (ImageNet's unless a run or an init bundle says otherwise), so
a trained bundle records exactly the input its encoder saw. All transforms take a uint8
``(3, L, L)`` tensor holding a centred square *region* of the tile (see :func:`centre_region`) and
return a float32 ``(3, S, S)`` tensor ``x = (p / 255 - mean) / std`` per channel.

- Evaluation (:class:`EvalTransform`): the region is the centre ``crop`` fraction of the tile side
  (384 / 1024 = 0.375 for the published models), resized to ``S`` (192) px with antialiased bilinear
  interpolation; on a region already ``S`` px it equals ``ImageInput.normalise``, what inference does.
- Training (:class:`TrainAugment`): the region is the centre ``train_crop`` fraction (512 / 1024);
  a random resized crop covering 50-100 % of its area (aspect ratio 3/4-4/3) is resized to ``S``,
  then a random dihedral transform (90-degree rotation and flip), a small random rotation with
  enough zoom that no empty corners appear, and light colour jitter.

Random draws come from an explicit ``np.random.Generator`` so that results are reproducible.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from model.bundle.image_input import ImageInput
from model.core.errors import one_line
from model.data.errors import DatasetError, UnreadableItemError

EVAL_CROP = 384 / 1024  # fraction of the tile side fed to the published models at evaluation
TRAIN_CROP = 512 / 1024  # fraction of the tile side the reference drew training crops from


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file as a uint8 RGB tensor (3, H, W); DatasetError naming the file if corrupt."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            pixels = np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise UnreadableItemError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableItemError(f"{path}: corrupt image ({one_line(e)})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1)


def check_image(path: str | os.PathLike, draft_side: int = 128) -> None:
    """DatasetError naming the file when it is not a decodable image; nothing is returned.

    Every byte of the file is decoded, cheaply: a JPEG at a reduced scale (libjpeg's DCT scaling,
    down to about ``draft_side`` px, which still reads all of its entropy-coded data, so a truncated
    file fails), other formats in full.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.draft("RGB", (draft_side, draft_side))
            im.load()
    except FileNotFoundError:
        raise UnreadableItemError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableItemError(f"{path}: corrupt image ({one_line(e)})") from None


def centre_region(image: torch.Tensor, fraction: float) -> torch.Tensor:
    """The centred square covering ``fraction`` of the shorter side: side = round(fraction * min(H, W)) px."""
    if not 0.0 < fraction <= 1.0:
        raise DatasetError(f"crop fraction must be in (0, 1], got {fraction}")
    h, w = image.shape[-2:]
    side = max(1, round(fraction * min(h, w)))
    top, left = (h - side) // 2, (w - side) // 2
    return image[..., top:top + side, left:left + side]


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ``size`` x ``size`` px (antialiased bilinear); a no-op when already that size."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return F.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


@lru_cache(maxsize=16)
def _statistics(mean: tuple[float, ...], std: tuple[float, ...], unit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit * mean, 1 / (unit * std)) as float32 (C, 1, 1) tensors."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) * unit
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1) * unit
    return m, 1.0 / s


def normalise(image: torch.Tensor, image_input: ImageInput) -> torch.Tensor:
    """uint8 pixels p (or [0, 1] floats x = p / 255), channels first -> float32 ``(x - mean) / std``
    with ``image_input``'s per-band mean and std.

    Computed as ``(p - 255 mean) * (1 / (255 std))`` in float32: one conversion and two in-place
    operations, the same as :meth:`ImageInput.normalise`, so uint8 input gives its values exactly.
    """
    unit = 255.0 if image.dtype == torch.uint8 else 1.0
    mean, scale = _statistics(tuple(image_input.mean), tuple(image_input.std), unit)
    return image.to(torch.float32, copy=True).sub_(mean).mul_(scale)


def image_transform(image_input: ImageInput, augment: bool) -> "EvalTransform | TrainAugment":
    """The transform of a dataset feeding an encoder with input ``image_input``: the training
    augmentation when ``augment``, else the evaluation preprocessing."""
    return TrainAugment(image_input) if augment else EvalTransform(image_input)


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic evaluation preprocessing: resize the region to ``image_input.tile_size`` px,
    normalise with ``image_input``'s mean and std."""

    image_input: ImageInput = ImageInput()

    @property
    def size(self) -> int:
        """Output side in px."""
        return self.image_input.tile_size

    def __call__(self, region: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        return normalise(resize_square(region, self.size), self.image_input)


@dataclass(frozen=True)
class TrainAugment:
    """Training augmentation of a region into an input of ``image_input`` (its tile size, mean and
    std); parameters drawn from ``rng``.

    scale: range of the crop's area as a fraction of the region's; ratio: range of its aspect
    ratio (width / height); max_rotation: degrees of extra rotation either way, zoomed by
    ``|cos a| + |sin a|`` so that the rotated square still fills the frame; brightness, contrast,
    saturation: maximum relative change (factor drawn from 1 +- value); hue: maximum shift as a
    fraction of the hue circle.
    """

    image_input: ImageInput = ImageInput()
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    max_rotation: float = 15.0
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02

    @property
    def size(self) -> int:
        """Output side in px."""
        return self.image_input.tile_size

    def __call__(self, region: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng if rng is not None else np.random.default_rng()
        image = self.random_resized_crop(region, rng)
        image = self.random_dihedral(image, rng)
        image = self.random_rotation(image, rng)
        return normalise(self.colour_jitter(image.float() / 255.0, rng), self.image_input)

    def random_resized_crop(self, region: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Crop a random box of area fraction U(scale) and log-uniform aspect ratio, resize to ``size``."""
        side = region.shape[-1]
        area = rng.uniform(*self.scale) * side * side
        aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        w = min(side, max(1, round(math.sqrt(area * aspect))))
        h = min(side, max(1, round(math.sqrt(area / aspect))))
        top = int(rng.integers(0, side - h + 1))
        left = int(rng.integers(0, side - w + 1))
        return F.resized_crop(region, top, left, h, w, [self.size, self.size],
                              interpolation=InterpolationMode.BILINEAR, antialias=True)

    @staticmethod
    def random_dihedral(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """One of the 8 symmetries of the square: rotate by k * 90 degrees, then maybe flip."""
        image = torch.rot90(image, int(rng.integers(0, 4)), dims=(-2, -1))
        return image.flip(-1) if rng.random() < 0.5 else image

    def random_rotation(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Rotate by U(-max_rotation, max_rotation) degrees about the centre, zoomed to fill the frame."""
        if self.max_rotation <= 0:
            return image
        angle = float(rng.uniform(-self.max_rotation, self.max_rotation))
        zoom = abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))
        return F.affine(image, angle=angle, translate=[0, 0], scale=zoom, shear=[0.0, 0.0],
                        interpolation=InterpolationMode.BILINEAR)

    def colour_jitter(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Brightness, contrast, saturation factors from U(1 - value, 1 + value), hue shift U(-hue, hue)."""
        image = F.adjust_brightness(image, float(rng.uniform(1 - self.brightness, 1 + self.brightness)))
        image = F.adjust_contrast(image, float(rng.uniform(1 - self.contrast, 1 + self.contrast)))
        image = F.adjust_saturation(image, float(rng.uniform(1 - self.saturation, 1 + self.saturation)))
        if self.hue > 0:
            image = F.adjust_hue(image, float(rng.uniform(-self.hue, self.hue)))
        return image.clamp_(0.0, 1.0)
