"""Readers for the labelled downstream layouts: class folders, DeepGlobe Land Cover and ADVANCE.

Layouts, as the public datasets ship them (and ``python -m model.synth classify|deepglobe|advance``
writes them):

- class folders (UC Merced, AID, NWPU-RESISC45): ``ROOT/<class>/<name>.{tif,jpg,png}``; the
  classes are the sub-folder names in sorted order (UC Merced's 256 x 256 px images are TIFFs);
- DeepGlobe Land Cover: ``ROOT/train/{id}_sat.jpg`` + ``{id}_mask.png`` (the original release), or
  ``ROOT/training_data/{images,masks}/`` and ``ROOT/test_data/{images,masks}/`` (a split layout);
  masks are colour-coded (:data:`DEEPGLOBE_COLOURS`), black (0, 0, 0) meaning "unknown";
- ADVANCE: ``ROOT/vision/<class>/<id>.jpg`` with the recording ``ROOT/sound/<class>/<id>.wav``.

Every reader raises :class:`~model.data.errors.DatasetError` with one line naming the folder or
file and the problem. A bad item inside a set (an image or mask that does not decode) is not an
error: the scanners decode every file once, cheaply (:func:`model.data.transforms.check_image`),
and leave the bad ones out, named and counted (:mod:`model.data.bad_items`); a class or split left
with nothing is an error.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.core.errors import one_line
from model.data.bad_items import LeftOut, keep_readable, problem_of
from model.data.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

DEEPGLOBE_CLASSES = ("urban", "agriculture", "rangeland", "forest", "water", "barren")
DEEPGLOBE_COLOURS = ((0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255))
"""DeepGlobe Land Cover colours (RGB) of the six labelled classes, in class-id order."""
UNKNOWN_COLOUR = (0, 0, 0)
IGNORE_INDEX = 255
"""Mask value of pixels that carry no class (DeepGlobe's "unknown" and any other colour)."""
SPLIT_LAYOUT = {"train": "training_data", "test": "test_data"}


def _check_dir(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    return root


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Visible files of ``folder`` whose suffix (any case) is one of ``suffixes``, sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# ----------------------------------------------------------------------------------------------
# Class folders


def _check_image(path: Path) -> None:
    from model.data.transforms import check_image

    check_image(path)


@dataclass(frozen=True)
class LabelledImages:
    """Images with class labels: ``paths[i]`` belongs to ``classes[labels[i]]``; ``left_out`` the
    files that did not decode."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    left_out: LeftOut = field(default_factory=LeftOut)

    def __len__(self) -> int:
        return len(self.paths)


def scan_class_folders(root: str | os.PathLike, check: bool = True) -> LabelledImages:
    """Every readable image of ``ROOT/<class>/``; classes are the sub-folders in sorted order.

    check: decode each image once and leave out (named, counted) those that fail. Empty class
    folders are an error (a label the model could never learn), as is a root with fewer than two
    classes.
    """
    root = _check_dir(root)
    classes, paths, labels = [], [], []
    left_out = LeftOut()
    for folder in _class_dirs(root):
        images = _files(folder, IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        if check:
            images = keep_readable(images, _check_image, left_out)
            if not images:
                raise DatasetError(f"{folder}: class folder holds no readable image")
        paths += images
        labels += [len(classes)] * len(images)
        classes.append(folder.name)
    if len(classes) < 2:
        raise DatasetError(f"{root}: a class-folder dataset needs at least two class sub-folders, "
                           f"found {len(classes)}")
    return LabelledImages(paths, np.asarray(labels, dtype=np.int64), classes, left_out)


def stratified_split(labels: np.ndarray, test_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), both sorted: per class, a seeded random ``round(test_ratio * n)``
    of its n samples (at least one, and at least one left for training when n >= 2) go to test.

    The draw depends only on ``labels``, ``test_ratio`` and ``seed``.
    """
    if not 0.0 < float(test_ratio) < 1.0:
        raise DatasetError(f"test ratio must be between 0 and 1, got {test_ratio}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        n_test = 0 if n < 2 else min(n - 1, max(1, int(round(test_ratio * n))))
        test += members[:n_test].tolist()
    test_idx = np.sort(np.asarray(test, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


# ----------------------------------------------------------------------------------------------
# DeepGlobe Land Cover


@dataclass(frozen=True)
class SegmentationTile:
    """One satellite image and its colour-coded mask."""

    tile_id: str
    image: Path
    mask: Path


def _pair_tiles(image_dir: Path, mask_dir: Path) -> list[SegmentationTile]:
    """``{id}_sat.*`` in image_dir with ``{id}_mask.png`` in mask_dir; a missing mask is an error."""
    tiles = []
    for image in _files(image_dir, IMAGE_SUFFIXES):
        if not image.stem.endswith("_sat"):
            continue
        tile_id = image.stem[: -len("_sat")]
        mask = mask_dir / f"{tile_id}_mask.png"
        if not mask.is_file():
            raise DatasetError(f"{image}: no mask {mask.name} in {mask_dir}")
        tiles.append(SegmentationTile(tile_id, image, mask))
    if not tiles:
        raise DatasetError(f"{image_dir}: no *_sat images")
    return tiles


def scan_deepglobe(root: str | os.PathLike, left_out: LeftOut | None = None,
                   check: bool = True) -> dict[str, list[SegmentationTile]]:
    """Tiles by split: ``{"train": [...], "test": [...]}``.

    The split layout (``training_data/`` + ``test_data/``) fills both; the original layout
    (``train/``, or ``*_sat`` files directly in ROOT) fills "train" only and leaves the test split
    to the caller (see :func:`split_tiles`). check: decode each image and mask once and leave out a
    tile with either unreadable (named in ``left_out`` when given); a split left empty is an error.
    """
    root = _check_dir(root)
    if (root / SPLIT_LAYOUT["train"]).is_dir():
        out = {}
        for split, name in SPLIT_LAYOUT.items():
            base = root / name
            if not (base / "images").is_dir() or not (base / "masks").is_dir():
                raise DatasetError(f"{base}: expected images/ and masks/ sub-folders")
            out[split] = _readable_tiles(_pair_tiles(base / "images", base / "masks"), base, left_out, check)
        return out
    folder = root / "train" if (root / "train").is_dir() else root
    return {"train": _readable_tiles(_pair_tiles(folder, folder), folder, left_out, check), "test": []}


def _check_tile(tile: SegmentationTile) -> None:
    """DatasetError naming the tile's image when the image or its mask does not decode."""
    _check_image(tile.image)
    try:
        _check_image(tile.mask)
    except DatasetError as e:
        raise DatasetError(f"{tile.image}: its mask {tile.mask.name} is unreadable "
                           f"({problem_of(e, tile.mask)})") from None


def _readable_tiles(tiles: list[SegmentationTile], folder: Path, left_out: LeftOut | None,
                    check: bool) -> list[SegmentationTile]:
    if not check:
        return tiles
    kept = keep_readable(tiles, _check_tile, LeftOut() if left_out is None else left_out, file_of=lambda t: t.image)
    if not kept:
        raise DatasetError(f"{folder}: none of the {len(tiles)} tiles has a readable image and mask")
    return kept


def split_tiles(tiles: list[SegmentationTile], test_ratio: float, seed: int) -> dict[str, list[SegmentationTile]]:
    """A seeded random ``round(test_ratio * n)`` of the tiles (at least one) as "test", the rest "train"."""
    if len(tiles) < 2:
        raise DatasetError(f"need at least two tiles to split into train and test, got {len(tiles)}")
    train_idx, test_idx = stratified_split(np.zeros(len(tiles), dtype=np.int64), test_ratio, seed)
    return {"train": [tiles[i] for i in train_idx], "test": [tiles[i] for i in test_idx]}


def decode_mask(rgb: np.ndarray) -> np.ndarray:
    """Colour-coded mask (H, W, 3) uint8 -> class ids (H, W) uint8.

    Each channel is thresholded at 128 (the released masks are not exactly 0/255), then the colour
    is looked up in :data:`DEEPGLOBE_COLOURS`; unknown (0, 0, 0) and colours of no class become
    :data:`IGNORE_INDEX`.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"a colour mask must be (H, W, 3), got {rgb.shape}")
    bits = (rgb[..., :3] >= 128).astype(np.uint8)
    code = bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]
    lookup = np.full(8, IGNORE_INDEX, dtype=np.uint8)
    for class_id, (r, g, b) in enumerate(DEEPGLOBE_COLOURS):
        lookup[(r >= 128) * 4 + (g >= 128) * 2 + (b >= 128)] = class_id
    return lookup[code]


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a colour-coded mask PNG as class ids (H, W) uint8 (:func:`decode_mask`)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such mask file") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{path}: corrupt mask ({one_line(e)})") from None
    return decode_mask(rgb)


# ----------------------------------------------------------------------------------------------
# ADVANCE


@dataclass(frozen=True)
class AudioVisualSample:
    """An aerial image and the recording made at the same place, with a scene class."""

    image: Path
    audio: Path
    label: int


def scan_advance(root: str | os.PathLike) -> tuple[list[AudioVisualSample], list[str]]:
    """(samples, class names): ``vision/<class>/<id>.<image>`` paired with ``sound/<class>/<id>.<audio>``.

    Images without a recording (or the reverse) are left out and counted in a log message;
    a class with no complete pair, or fewer than two classes, is an error.
    """
    root = _check_dir(root)
    vision, sound = root / "vision", root / "sound"
    for folder in (vision, sound):
        if not folder.is_dir():
            raise DatasetError(f"{root}: not an ADVANCE folder ({folder.name}/ missing)")
    classes = [p.name for p in _class_dirs(vision)]
    samples: list[AudioVisualSample] = []
    unpaired = 0
    for label, name in enumerate(classes):
        audio_dir = sound / name
        audio = {p.stem: p for p in reversed(_files(audio_dir, AUDIO_SUFFIXES))} if audio_dir.is_dir() else {}
        images = _files(vision / name, IMAGE_SUFFIXES)
        pairs = [AudioVisualSample(img, audio[img.stem], label) for img in images if img.stem in audio]
        if not pairs:
            raise DatasetError(f"{vision / name}: no image has a recording in {audio_dir}")
        unpaired += len(images) - len(pairs) + len(audio) - len(pairs)
        samples += pairs
    if len(classes) < 2:
        raise DatasetError(f"{vision}: needs at least two class folders, found {len(classes)}")
    if unpaired:
        log.warning("%s: %d images or recordings have no counterpart and are left out", root, unpaired)
    return samples, classes
