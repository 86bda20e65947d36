"""Labelled datasets for the fine-tuning tasks, drawn from the same synthetic world as the pairs.

Three layouts, each mimicking a public dataset:

- ``classify`` (like UC Merced): ``<out>/<land use>/<land use>_00012.jpg``; each image is a place
  whose land cover covers at least ``threshold`` (default 0.8) of the image footprint, labelled
  with its land use (:mod:`model.synth.land_use`: twelve classes from land cover plus latents);
- ``deepglobe`` (like DeepGlobe Land Cover): ``<out>/train/{id}_sat.jpg`` + ``{id}_mask.png`` with
  the DeepGlobe colour code; with ``split``: ``training_data/{images,masks}/`` and
  ``test_data/{images,masks}/`` instead. About UNKNOWN_PROBABILITY of the tiles carry a cloud,
  labelled with DeepGlobe's "unknown" colour (0, 0, 0) where its opacity exceeds 0.5;
- ``advance`` (like ADVANCE): ``vision/<land use>/{id}.jpg`` and ``sound/<land use>/{id}.wav``
  (16-bit PCM, 22,050 Hz mono), places whose land cover covers at least ``threshold`` (default
  0.7) of the 96 m square around the recording point, labelled with their land use; the recording
  is the place's soundscape (:mod:`model.synth.soundscape`), as for the pairs.

``samples`` counts images in all; the land-use layouts spread them evenly over the twelve land
uses (the first ``samples % 12`` get one more). The land uses are not the pretraining signal: the
pairs' ``dominant`` is a sound source, and land uses that sound alike or look alike cut across it. Image ``i`` draws its randomness from
``SeedSequence(seed, spawn_key=(stream, i))``, so outputs do not depend on the number of workers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.synth.errors import SynthError
from model.synth.files import prepare_dir, write_audio, write_jpeg, write_png
from model.synth.land_use import LAND_USES, land_use_positions
from model.synth.latents import place_latents
from model.synth.noise import fbm_grid, make_key
from model.synth.pairs import KEY_OFFSET, check_common, check_duration, sample_rng
from model.synth.parallel import run_jobs
from model.synth.place import PAIR_GSD, random_positions, render_place
from model.synth.sounds import SAMPLE_RATE
from model.synth.soundscape import soundscape, source_levels
from model.synth.world import DEEPGLOBE_COLOURS, SOUND_SIGMA_M, World

UNKNOWN_PROBABILITY = 0.15
UNKNOWN_ID = len(DEEPGLOBE_COLOURS) - 1
_STREAM_POSITIONS, _STREAM_CLASSIFY, _STREAM_DEEPGLOBE, _STREAM_ADVANCE = 10, 11, 12, 13


@dataclass(frozen=True)
class ImageJob:
    """One labelled place to render: where, how big, which random stream, and where it goes."""

    seed: int
    stream: int
    index: int
    x: float
    y: float
    size: int
    gsd: float
    image_path: Path
    extra_path: Path | None = None  # the mask (deepglobe) or the recording (advance)
    duration: float = 0.0


def _check_threshold(threshold: float) -> float:
    if not 0.0 < float(threshold) <= 1.0:
        raise SynthError(f"--threshold must be in (0, 1], got {threshold}")
    return float(threshold)


def _labelled_positions(world: World, samples: int, side: float, threshold: float, seed: int):
    """(land-use id, x, y) per image, land uses in order (:func:`model.synth.land_use.land_use_positions`)."""
    return land_use_positions(world, samples, side, threshold, sample_rng(seed, 0, stream=_STREAM_POSITIONS))


def _write_class_image(job: ImageJob) -> None:
    rng = sample_rng(job.seed, job.index, stream=job.stream)
    place = render_place(World(job.seed), job.x, job.y, job.size, job.gsd, rng)
    write_jpeg(place.image, job.image_path)


def write_classify(
    out_dir: str | os.PathLike, samples: int, size: int = 256, seed: int = 0, gsd: float = PAIR_GSD,
    threshold: float = 0.8, workers: int | None = None, progress: bool = True,
) -> Path:
    """Write a UC Merced-like scene-classification set of ``samples`` images; return the folder."""
    check_common(samples, size, gsd)
    threshold = _check_threshold(threshold)
    out = prepare_dir(out_dir)
    world = World(seed)
    jobs = []
    counters = [0] * len(LAND_USES)
    for i, (c, x, y) in enumerate(_labelled_positions(world, int(samples), size * gsd, threshold, seed)):
        folder = out / LAND_USES[c]
        folder.mkdir(exist_ok=True)
        path = folder / f"{LAND_USES[c]}_{counters[c]:05d}.jpg"
        counters[c] += 1
        jobs.append(ImageJob(seed, _STREAM_CLASSIFY, i, x, y, int(size), float(gsd), path))
    run_jobs(_write_class_image, jobs, workers, "classify", progress)
    return out


def add_cloud(image: np.ndarray, mask: np.ndarray, world: World, x: float, y: float, gsd: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint a cloud over a tile; label it unknown where its opacity exceeds 0.5.

    opacity = clip((n - t) / 0.06, 0, 1), n a 60 m fractal noise, t uniform in 0.5..0.62;
    pixel = (1 - opacity) pixel + opacity 236.
    """
    h, w = mask.shape
    xs = x - w * gsd / 2.0 + (np.arange(w) + 0.5) * gsd
    ys = y + h * gsd / 2.0 - (np.arange(h) + 0.5) * gsd
    noise = fbm_grid(xs, ys, 60.0, make_key(int(rng.integers(1 << 31)), 7), octaves=3)
    opacity = np.clip((noise - rng.uniform(0.5, 0.62)) / 0.06, 0.0, 1.0)
    cloudy = image * (1.0 - opacity[..., None]) + 236.0 * opacity[..., None]
    return cloudy.astype(np.uint8), np.where(opacity > 0.5, UNKNOWN_ID, mask).astype(np.uint8)


def _write_deepglobe_tile(job: ImageJob) -> None:
    rng = sample_rng(job.seed, job.index, stream=job.stream)
    world = World(job.seed)
    place = render_place(world, job.x, job.y, job.size, job.gsd, rng)
    image, mask = place.image, place.mask
    if rng.random() < UNKNOWN_PROBABILITY:
        image, mask = add_cloud(image, mask, world, job.x, job.y, job.gsd, rng)
    write_jpeg(image, job.image_path)
    write_png(np.array(DEEPGLOBE_COLOURS, dtype=np.uint8)[mask], job.extra_path)


def write_deepglobe(
    out_dir: str | os.PathLike, samples: int, size: int = 512, seed: int = 0, split: bool = False,
    test_fraction: float = 0.2, gsd: float = PAIR_GSD, workers: int | None = None, progress: bool = True,
) -> Path:
    """Write a DeepGlobe Land Cover-like segmentation set of ``samples`` tiles; return the folder.

    Without ``split``: ``train/{id}_sat.jpg`` + ``train/{id}_mask.png``. With ``split``: a random
    ``test_fraction`` of the tiles goes to ``test_data/``, the rest to ``training_data/``.
    """
    check_common(samples, size, gsd)
    if not 0.0 <= float(test_fraction) < 1.0:
        raise SynthError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    out = prepare_dir(out_dir)
    world = World(seed)
    rng = sample_rng(seed, 0, stream=_STREAM_POSITIONS)
    xs, ys = random_positions(world, int(samples), rng)
    test = set(rng.permutation(int(samples))[: int(round(samples * test_fraction))].tolist()) if split else set()
    jobs = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        tile_id = KEY_OFFSET + i
        if split:
            base = out / ("test_data" if i in test else "training_data")
            image_dir, mask_dir = base / "images", base / "masks"
        else:
            image_dir = mask_dir = out / "train"
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        jobs.append(ImageJob(seed, _STREAM_DEEPGLOBE, i, float(x), float(y), int(size), float(gsd),
                             image_dir / f"{tile_id}_sat.jpg", mask_dir / f"{tile_id}_mask.png"))
    run_jobs(_write_deepglobe_tile, jobs, workers, "deepglobe", progress)
    return out


def _write_advance_pair(job: ImageJob) -> None:
    rng = sample_rng(job.seed, job.index, stream=job.stream)
    world = World(job.seed)
    place = render_place(world, job.x, job.y, job.size, job.gsd, rng)
    levels = source_levels(place_latents(world, job.x, job.y, place.fractions[None]))[0]
    sound = soundscape(levels, job.duration, rng)
    write_jpeg(place.image, job.image_path)
    write_audio(sound.waveform, job.extra_path, SAMPLE_RATE)


def write_advance(
    out_dir: str | os.PathLike, samples: int, size: int = 512, seed: int = 0, duration: float = 10.0,
    gsd: float = PAIR_GSD, threshold: float = 0.7, workers: int | None = None, progress: bool = True,
) -> Path:
    """Write an ADVANCE-like audio-visual scene set of ``samples`` image/recording pairs."""
    check_common(samples, size, gsd)
    duration = check_duration((duration, duration))[0]
    threshold = _check_threshold(threshold)
    out = prepare_dir(out_dir)
    world = World(seed)
    jobs = []
    for i, (c, x, y) in enumerate(_labelled_positions(world, int(samples), 4.0 * SOUND_SIGMA_M, threshold, seed)):
        vision, sound = out / "vision" / LAND_USES[c], out / "sound" / LAND_USES[c]
        vision.mkdir(parents=True, exist_ok=True)
        sound.mkdir(parents=True, exist_ok=True)
        jobs.append(ImageJob(seed, _STREAM_ADVANCE, i, x, y, int(size), float(gsd),
                             vision / f"{i:05d}.jpg", sound / f"{i:05d}.wav", duration))
    run_jobs(_write_advance_pair, jobs, workers, "advance", progress)
    return out

