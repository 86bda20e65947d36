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
- Training as the SoundingEarth reference code (:class:`ReferenceAugment`, ``--augment
  reference``): the same region and random resized crop, then a rotation at any angle with
  mirrored borders, a 3 x 3 box blur, a grid distortion and hue / saturation / value shifts; no flips.

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


def resize_square(image: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Resize to ``size`` x ``size`` px (bilinear, antialiased unless ``antialias`` is False); a
    no-op when already that size."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return F.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=antialias)


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


AUGMENTATIONS = ("ours", "reference", "none")


def image_transform(image_input: ImageInput, augment: bool | str) -> "EvalTransform | TrainAugment | ReferenceAugment":
    """The transform of a dataset feeding an encoder with input ``image_input``: the training
    augmentation when ``augment`` (True or "ours": :class:`TrainAugment`; "reference":
    :class:`ReferenceAugment`), else (False or "none") the evaluation preprocessing."""
    if augment == "reference":
        return ReferenceAugment(image_input)
    if augment not in (True, False, *AUGMENTATIONS):
        raise DatasetError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    return TrainAugment(image_input) if augment in (True, "ours") else EvalTransform(image_input)


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic evaluation preprocessing: resize the region to ``image_input.tile_size`` px
    (antialiased unless ``image_input.antialias`` is False), normalise with ``image_input``'s mean
    and std."""

    image_input: ImageInput = ImageInput()

    @property
    def size(self) -> int:
        """Output side in px."""
        return self.image_input.tile_size

    def __call__(self, region: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        return normalise(resize_square(region, self.size, self.image_input.antialias), self.image_input)


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


# ----------------------------------------------------------------------------------------------
# The reference code's training augmentation


@dataclass(frozen=True)
class ReferenceAugment:
    """The training augmentation of the SoundingEarth reference code, on uint8 (3, L, L) regions.

    The reference (khdlr/SoundingEarth ``data_loading.py``, the version of commit ``bc69b23`` that
    reads ``images/`` and ``spectrograms/`` JPEGs, with ``AugmentationMode`` 'image') composes
    albumentations ``CenterCrop(512, 512)``, ``RandomResizedCrop(192, 192, scale=[0.5, 1.0])``,
    ``Rotate(limit=180, p=1.0)``, ``Blur(blur_limit=3)``, ``GridDistortion()``,
    ``HueSaturationValue()`` and ``Normalize()``; every step works on uint8 pixels. Here, with the
    library defaults those calls rely on, step by step (each returns uint8, as albumentations does):

    - the region is the dataset's centre ``train_crop`` (0.5 of a 1024 px tile = the 512 px crop);
    - :meth:`random_resized_crop`: up to 10 tries of an area fraction U(``scale``) and a log-uniform
      aspect ratio in ``ratio`` (3/4-4/3), kept when it fits, else the whole (square) region;
      resized to ``S`` px with bilinear interpolation, not antialiased (``antialias``), as OpenCV's
      ``INTER_LINEAR``;
    - :meth:`rotate`: always, by U(-``rotate_limit``, ``rotate_limit``) degrees about the centre,
      same size, bilinear, borders filled by mirroring without repeating the edge pixel (OpenCV's
      ``BORDER_REFLECT_101``), no zoom, so the corners hold mirrored copies of the image;
    - :meth:`blur`: with probability ``blur_p`` (0.5), a ``blur_kernel`` x ``blur_kernel`` (3 x 3)
      box mean, borders reflected (101) as ``cv2.blur``;
    - :meth:`grid_distortion`: with probability ``grid_p`` (0.5), albumentations' grid distortion
      with ``grid_steps`` (5) cells a side and each cell's step scaled by 1 + U(-``grid_limit``,
      ``grid_limit``) (0.3), separately along x and y (:func:`grid_distortion_coordinates`),
      bilinear, borders reflected (101);
    - :meth:`hue_saturation_value`: with probability ``hsv_p`` (0.5), in OpenCV's 8-bit HSV: hue
      shifted by U(-``hue_shift``, ``hue_shift``) of 180 per turn (20: up to 40 degrees) around the
      circle, saturation and value by U(-``sat_shift``, ``sat_shift``) and U(-``val_shift``,
      ``val_shift``) of 255 (30 and 20), clipped;
    - normalisation with ``image_input``'s mean and std (ImageNet's by default, as ``Normalize()``).

    There is no flip anywhere. Resampling (rotation, distortion) is ``torch.nn.functional.grid_sample``
    (bilinear, ``align_corners=True`` with ``padding_mode="reflection"``, which reflects about the
    edge pixels' centres exactly as ``BORDER_REFLECT_101``); OpenCV's remap quantises its bilinear
    weights to 1/32 px and its HSV conversion to 8 bits, so pixels differ by rounding, not by design.
    Random draws come from ``rng`` (the reference used Python's global ``random``).
    """

    image_input: ImageInput = ImageInput()
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotate_limit: float = 180.0
    blur_p: float = 0.5
    blur_kernel: int = 3
    grid_p: float = 0.5
    grid_steps: int = 5
    grid_limit: float = 0.3
    hsv_p: float = 0.5
    hue_shift: float = 20.0
    sat_shift: float = 30.0
    val_shift: float = 20.0
    antialias: bool = False

    @property
    def size(self) -> int:
        """Output side in px."""
        return self.image_input.tile_size

    def __call__(self, region: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng if rng is not None else np.random.default_rng()
        image = self.random_resized_crop(region, rng)
        image = self.rotate(image, float(rng.uniform(-self.rotate_limit, self.rotate_limit)))
        if rng.random() < self.blur_p:
            image = self.blur(image)
        if rng.random() < self.grid_p:
            image = self.grid_distortion(image, rng.uniform(-self.grid_limit, self.grid_limit, self.grid_steps + 1),
                                         rng.uniform(-self.grid_limit, self.grid_limit, self.grid_steps + 1))
        if rng.random() < self.hsv_p:
            image = self.hue_saturation_value(image, float(rng.uniform(-self.hue_shift, self.hue_shift)),
                                              float(rng.uniform(-self.sat_shift, self.sat_shift)),
                                              float(rng.uniform(-self.val_shift, self.val_shift)))
        return normalise(image, self.image_input)

    def random_resized_crop(self, region: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """torchvision's / albumentations' RandomResizedCrop of ``region`` to ``size`` px (class doc)."""
        height, width = region.shape[-2:]
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = rng.uniform(*self.scale) * height * width
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                break
        else:  # the centred box of the nearest allowed aspect ratio (all of a square region)
            w, h = width, height
            if width / height < self.ratio[0]:
                h = round(width / self.ratio[0])
            elif width / height > self.ratio[1]:
                w = round(height * self.ratio[1])
            top, left = (height - h) // 2, (width - w) // 2
        return F.resized_crop(region, top, left, h, w, [self.size, self.size],
                              interpolation=InterpolationMode.BILINEAR, antialias=self.antialias)

    @staticmethod
    def rotate(image: torch.Tensor, angle: float) -> torch.Tensor:
        """uint8 ``image`` turned by ``angle`` degrees (counter-clockwise as displayed) about its
        centre, same size, mirrored borders (class doc)."""
        height, width = image.shape[-2:]
        cy, cx = (height - 1) / 2, (width - 1) / 2
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64) - cy,
                              torch.arange(width, dtype=torch.float64) - cx, indexing="ij")
        # the source of each output pixel: the inverse rotation of its offset from the centre
        return remap(image, cx + x * cos - y * sin, cy + x * sin + y * cos)

    def blur(self, image: torch.Tensor) -> torch.Tensor:
        """The ``blur_kernel`` x ``blur_kernel`` box mean of uint8 ``image``, borders reflected (101)."""
        k = self.blur_kernel
        padded = torch.nn.functional.pad(image[None].float(), [k // 2] * 4, mode="reflect")
        return _to_uint8(torch.nn.functional.avg_pool2d(padded, k, stride=1)[0])

    def grid_distortion(self, image: torch.Tensor, x_steps: np.ndarray, y_steps: np.ndarray) -> torch.Tensor:
        """uint8 ``image`` resampled at :func:`grid_distortion_coordinates` along x (``x_steps``) and
        y (``y_steps``): ``grid_steps + 1`` relative step changes each."""
        height, width = image.shape[-2:]
        xs = torch.from_numpy(grid_distortion_coordinates(width, self.grid_steps, x_steps))
        ys = torch.from_numpy(grid_distortion_coordinates(height, self.grid_steps, y_steps))
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        return remap(image, x, y)

    @staticmethod
    def hue_saturation_value(image: torch.Tensor, hue: float, saturation: float, value: float) -> torch.Tensor:
        """uint8 ``image`` with its hue turned by ``hue`` / 180 of a turn and its saturation and value
        raised by ``saturation`` / 255 and ``value`` / 255 (clipped to [0, 1])."""
        h, s, v = rgb_to_hsv(image.float() / 255.0)
        h = torch.remainder(h + hue / 180.0, 1.0)
        s = (s + saturation / 255.0).clamp_(0.0, 1.0)
        v = (v + value / 255.0).clamp_(0.0, 1.0)
        return _to_uint8(hsv_to_rgb(h, s, v) * 255.0)


def grid_distortion_coordinates(length: int, num_steps: int, steps: np.ndarray) -> np.ndarray:
    """Source coordinates (float32, pixel centres at integers) of the ``length`` output pixels along one
    axis of albumentations' ``GridDistortion``: cells of ``length // num_steps`` px; cell k runs
    linearly (both ends included) from where cell k - 1 ended to that plus ``cell * (1 + steps[k])``;
    the last, partial cell ends at ``length``."""
    cell = length // num_steps
    coords = np.zeros(length, np.float32)
    previous = 0.0
    for k in range(num_steps + 1):
        start = k * cell
        end = start + cell
        if end > length:
            end, current = length, float(length)
        else:
            current = previous + cell * (1.0 + float(steps[k]))
        coords[start:end] = np.linspace(previous, current, end - start)
        previous = current
    return coords


def remap(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) ``image`` sampled bilinearly at pixel coordinates ``x``, ``y`` (each (H', W'),
    pixel centres at integers), points outside mirrored about the edge pixels (``BORDER_REFLECT_101``)."""
    height, width = image.shape[-2:]
    grid = torch.stack([2.0 * x / max(width - 1, 1) - 1.0, 2.0 * y / max(height - 1, 1) - 1.0], dim=-1)
    out = torch.nn.functional.grid_sample(image[None].float(), grid[None].float(), mode="bilinear",
                                          padding_mode="reflection", align_corners=True)
    return _to_uint8(out[0])


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixel values on the 0-255 scale rounded and clipped to uint8."""
    return pixels.round_().clamp_(0, 255).to(torch.uint8)


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hue in [0, 1) of a turn, saturation, value) of float RGB (3, H, W) in [0, 1]; grey has hue 0."""
    r, g, b = rgb.unbind(0)
    value, _ = rgb.max(0)
    chroma = value - rgb.min(0).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, torch.remainder((g - b) / safe, 6.0),
                      torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = torch.where(chroma > 0, hue / 6.0, torch.zeros_like(hue))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return hue, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Float RGB (3, H, W) of hue (a fraction of a turn), saturation and value in [0, 1]."""
    # the closed form: channel n (5 red, 3 green, 1 blue) is v - v s clip(min(k, 4 - k), 0, 1),
    # k = (n + 6 hue) mod 6
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(hue * 6.0 + n, 6.0)
        channels.append(value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels)
