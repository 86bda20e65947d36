"""The prepared image cache: every tile's centre region, cropped and resized once.

A cache folder holds ``{key}.npy`` files, each a uint8 ``(size, size, 3)`` array (RGB, rows top
to bottom) of the centre ``crop`` fraction of the tile side, resized with antialiased bilinear
interpolation, and ``prepared.json`` recording ``size`` (px) and ``crop`` (fraction of the tile
side). Reading one small ``.npy`` costs tens of microseconds; decoding a 1024 px JPEG costs tens
of milliseconds.

A cache can serve a dataset that needs the centre ``region`` fraction at an output of ``image_size``
px when it covers the region (``crop >= region``) and is sharp enough: its pixel density
``size / crop`` (px per tile side) is at least the evaluation density ``image_size / eval_crop``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from model.core.atomic import write_atomic, write_text_atomic
from model.data.errors import DatasetError, UnreadableItemError

MANIFEST = "prepared.json"
FORMAT = "npy-uint8-hwc"
CACHE_PARENT = ".cache"
TOLERANCE = 1e-6


@dataclass(frozen=True)
class ImageCacheSpec:
    """What a cache holds: ``size`` px square arrays of the centre ``crop`` fraction of each tile."""

    size: int
    crop: float
    format: str = FORMAT
    resize: str = "bilinear-antialias"

    @property
    def density(self) -> float:
        """Pixels per tile side: size / crop."""
        return self.size / self.crop

    def serves(self, region: float, density: float) -> bool:
        """True when this cache covers the centre ``region`` fraction at >= ``density`` px per tile side."""
        return self.crop >= region - TOLERANCE and self.density >= density * (1 - TOLERANCE)

    def describe(self) -> str:
        return f"the {self.crop:g} centre crop at {self.size} px"


def default_image_cache_dir(root: str | os.PathLike, size: int, crop: float) -> Path:
    """``ROOT/.cache/images-{size}-{crop}``, e.g. ``images-192-0.375``."""
    return Path(root) / CACHE_PARENT / f"images-{size}-{crop:g}"


def read_manifest(folder: str | os.PathLike) -> ImageCacheSpec:
    """The spec recorded in ``folder/prepared.json``; DatasetError naming the file if absent or bad."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path}: not a prepared image cache (no {MANIFEST}; "
                           "run python -m model.data.prepare)")
    try:
        data = json.loads(path.read_text())
        spec = ImageCacheSpec(size=int(data["size"]), crop=float(data["crop"]),
                              format=str(data.get("format", FORMAT)), resize=str(data.get("resize", "")))
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: unreadable cache manifest ({type(e).__name__}: {e})") from None
    if spec.format != FORMAT:
        raise DatasetError(f"{path}: cache format {spec.format!r}, expected {FORMAT!r}")
    return spec


def write_manifest(folder: str | os.PathLike, spec: ImageCacheSpec) -> Path:
    """Write ``folder/prepared.json`` atomically."""
    return write_text_atomic(Path(folder) / MANIFEST, json.dumps(asdict(spec), indent=2) + "\n")


def find_image_cache(root: str | os.PathLike, region: float, density: float) -> Path | None:
    """The prepared cache under ``ROOT/.cache`` that serves (region, density) with the fewest pixels, or None."""
    parent = Path(root) / CACHE_PARENT
    if not parent.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for folder in sorted(parent.glob("images-*")):
        try:
            spec = read_manifest(folder)
        except DatasetError:
            continue
        if spec.serves(region, density) and (best is None or spec.size < best[0]):
            best = (spec.size, folder)
    return None if best is None else best[1]


def check_image_cache(folder: str | os.PathLike, region: float, density: float) -> ImageCacheSpec:
    """The spec of ``folder``; DatasetError (one line, naming the manifest) if it cannot serve the dataset."""
    spec = read_manifest(folder)
    if not spec.serves(region, density):
        need_size = round(region * density)
        raise DatasetError(
            f"{Path(folder) / MANIFEST}: cache holds {spec.describe()}, this dataset needs at least "
            f"the {region:g} centre crop at {need_size} px (python -m model.data.prepare ROOT "
            f"--size {need_size} --crop {region:g})")
    return spec


def cached_keys(folder: str | os.PathLike) -> set[int]:
    """Keys with a ``{key}.npy`` file in the cache folder (one directory listing)."""
    keys = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, _, ext = entry.name.rpartition(".")
            if ext == "npy" and stem.lstrip("-").isdigit():
                keys.add(int(stem))
    return keys


def cache_file(folder: str | os.PathLike, key: int) -> Path:
    return Path(folder) / f"{int(key)}.npy"


def save_cached_image(folder: str | os.PathLike, key: int, image: torch.Tensor) -> Path:
    """Store a uint8 (3, S, S) tensor as ``{key}.npy`` (S, S, 3), atomically."""
    array = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
    return write_atomic(cache_file(folder, key), lambda tmp: np.save(tmp, array))  # temp name ends in .npy


def load_cached_image(folder: str | os.PathLike, key: int) -> torch.Tensor:
    """A cached region as a uint8 (3, S, S) tensor; DatasetError naming the file if unreadable."""
    path = cache_file(folder, key)
    try:
        pixels = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UnreadableItemError(f"{path}: unreadable cached image ({e}); delete it and rerun "
                           "python -m model.data.prepare") from None
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise UnreadableItemError(f"{path}: cached image has shape {pixels.shape} {pixels.dtype}, "
                           "expected (S, S, 3) uint8")
    return torch.from_numpy(pixels).permute(2, 0, 1)
