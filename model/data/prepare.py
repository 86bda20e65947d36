"""Prepare a dataset folder for fast training: crop and resize every image once.

Training from the raw tiles decodes a 1024 x 1024 px JPEG per sample and step, then throws
away all but the centre. This step stores each tile's centre ``crop`` fraction (of the tile side),
resized to ``size`` x ``size`` px, as ``ROOT/.cache/images-{size}-{crop}/{key}.npy`` (uint8) with
a ``prepared.json`` describing it; :class:`SoundingEarthDataset` finds and uses such a cache.

- evaluation of the published models: ``--size 192 --crop 0.375`` (384 of 1024 px to 192 px);
- training with augmentation: ``--size 256 --crop 0.5`` (the 512 px region the random crops are
  drawn from, at the same 512 px per tile side); it serves evaluation too.

Reruns skip keys already prepared; each file is written atomically. An image that does not decode
is reported by name, left out (a ``{key}.bad`` marker in the cache folder, which
:class:`SoundingEarthDataset` reads, leaves the key out of training) and counted at the end; the
rest goes on. A rerun tries marked images again.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from model.data.bad_items import LeftOut, clear_bad, mark_bad, problem_of
from model.data.errors import DatasetError
from model.data.image_cache import (
    ImageCacheSpec, cache_file, default_image_cache_dir, read_manifest, save_cached_image,
    write_manifest,
)
from model.data.metadata import IMAGE_DIR, IMAGE_SUFFIXES, files_by_key, read_metadata
from model.data.transforms import centre_region, read_image, resize_square


def prepare_image(source: Path, out: Path, key: int, size: int, crop: float) -> Path:
    """Decode one tile, keep its centre ``crop`` fraction, resize to ``size`` px, store it."""
    region = centre_region(read_image(source), crop)
    return save_cached_image(out, key, resize_square(region, size).contiguous())


def _prepare_job(job: tuple[Path, Path, int, int, float]) -> tuple[int, str]:
    """(key, "" or the problem of an image that does not decode, which is then marked bad)."""
    source, out, key = job[0], job[1], job[2]
    try:
        prepare_image(*job)
    except DatasetError as e:
        problem = problem_of(e, source)
        mark_bad(out, key, f"{source}: {problem}")
        return key, problem
    clear_bad(out, key)
    return key, ""


def prepare_images(
    root: str | os.PathLike,
    size: int = 192,
    crop: float = 0.375,
    out: str | os.PathLike | None = None,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Fill the image cache for every metadata key that has an image; returns the cache folder.

    size: output side in px; crop: fraction of the tile side kept around the centre; out: the
    cache folder (default ``ROOT/.cache/images-{size}-{crop}``); workers: processes (0 = this one).
    A folder prepared with other settings is refused with DatasetError. A corrupt image is named,
    marked bad in the cache and counted in one line on stderr; the rest goes on.
    """
    if int(size) < 1 or not 0.0 < float(crop) <= 1.0:
        raise DatasetError(f"size must be >= 1 px and crop in (0, 1], got size={size}, crop={crop}")
    root = Path(root)
    keys = read_metadata(root).index
    images = files_by_key(root / IMAGE_DIR, IMAGE_SUFFIXES)
    out = Path(out) if out is not None else default_image_cache_dir(root, size, crop)
    spec = ImageCacheSpec(size=int(size), crop=float(crop))
    _claim_folder(out, spec)
    todo = [(images[k], out, int(k), spec.size, spec.crop) for k in keys
            if k in images and not cache_file(out, k).is_file()]
    left_out = LeftOut()
    bar = tqdm(total=len(todo), desc=f"prepare {out.name}", unit="img", disable=not progress)
    with bar:
        for key, problem in _run(todo, workers):
            if problem:
                left_out.add(images[key], problem)
            bar.update()
    if left_out:
        print(left_out.summary("images"), file=sys.stderr)
    return out


def _claim_folder(out: Path, spec: ImageCacheSpec) -> None:
    """Create the cache folder with its manifest; DatasetError if it was prepared with other settings."""
    if (out / "prepared.json").is_file():
        found = read_manifest(out)
        if (found.size, found.crop) != (spec.size, spec.crop):
            raise DatasetError(f"{out / 'prepared.json'}: folder holds {found.describe()}, "
                               f"not {spec.describe()}; choose another --out")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, spec)
    except OSError as e:
        raise DatasetError(f"{out}: cannot create the image cache ({e.strerror or e}); choose another --out") from None


def _run(jobs: list[tuple[Path, Path, int, int, float]], workers: int) -> Iterator[tuple[int, str]]:
    if workers <= 0 or len(jobs) < 2:
        for job in jobs:
            yield _prepare_job(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_prepare_job, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers))))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.data.prepare",
        description="Crop and resize every image of a SoundingEarth-format folder once into a cache "
                    "that SoundingEarthDataset reads instead of the full-size JPEGs. "
                    "Evaluation: --size 192 --crop 0.375; training with augmentation: --size 256 --crop 0.5.",
    )
    parser.add_argument("root", type=Path, help="dataset folder holding metadata.csv and images/")
    parser.add_argument("--size", type=int, default=192, help="output side in pixels (default 192)")
    parser.add_argument("--crop", type=float, default=0.375,
                        help="centre region kept, as a fraction of the tile side (default 0.375 = 384/1024)")
    parser.add_argument("--out", type=Path, default=None,
                        help="cache folder (default ROOT/.cache/images-SIZE-CROP)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default 0: this process)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m model.data.prepare``; bad input raises DatasetError (exit 2 through run_cli)."""
    args = build_parser().parse_args(argv)
    print(prepare_images(args.root, args.size, args.crop, args.out, args.workers))
    return 0


if __name__ == "__main__":
    from model.core.cli import run_cli

    sys.exit(run_cli(main))
