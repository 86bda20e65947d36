"""SoundingEarth-format pairs: places of the synthetic world with an aerial image and a recording.

Layout of the output folder::

    metadata.csv               key, longitude, latitude, title, description, frac_<class> x 6, dominant,
                               gsd, land_cover, activity, traffic, water_near, vegetation, wind
    images/{key}.jpg           RGB, size x size pixels at 0.5 m per pixel, centred on the place
    audio/{key}.mp3            22,050 Hz mono, duration uniform in [min, max] seconds
    spectrograms/{key}.jpg     SoundingEarth 8-bit log-mel JPEG (128 rows) of that recording
    masks/{key}.png            uint8 class ids 0..5, same grid as the image

Keys are ``100000 + i``. Places are uniform over the world's extent; ``frac_<class>`` are the
centre-weighted fractions (Gaussian, sigma 24 m) that drove the audio mix, written with six
decimals and summing to exactly 1; ``land_cover`` is the class of the largest fraction. The
latents (:mod:`model.synth.latents`, each 0..1, three decimals) set the sound sources' levels
(:mod:`model.synth.soundscape`), and ``dominant`` is the recording's loudest sound source
(one of :data:`model.synth.soundscape.SOURCES`), which is what the soundscape head learns.
Sample ``i`` draws its randomness from ``SeedSequence(seed, spawn_key=(1, i))``, so the output is
the same whatever the number of workers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.synth.captions import description, title
from model.synth.latents import LATENTS, Latents, place_latents
from model.synth.errors import SynthError
from model.synth.files import prepare_dir, write_audio, write_csv, write_jpeg, write_png
from model.synth.parallel import run_jobs
from model.synth.place import PAIR_GSD, random_positions, render_place
from model.synth.sounds import SAMPLE_RATE
from model.synth.soundscape import soundscape, source_levels
from model.synth.world import CLASSES, World

KEY_OFFSET = 100_000
FRACTION_COLUMNS = [f"frac_{c}" for c in CLASSES]
COLUMNS = ["key", "longitude", "latitude", "title", "description", *FRACTION_COLUMNS, "dominant", "gsd",
           "land_cover", *LATENTS]
SUBFOLDERS = ("images", "audio", "spectrograms", "masks")
MIN_SIZE, MAX_SIZE = 32, 1024
MAX_DURATION = 120.0


@dataclass(frozen=True)
class PairJob:
    """Everything one worker needs to write one pair."""

    out_dir: Path
    seed: int
    index: int
    x: float
    y: float
    longitude: float
    latitude: float
    size: int
    gsd: float
    duration: tuple[float, float]


def sample_rng(seed: int, index: int, stream: int = 1) -> np.random.Generator:
    """The random generator of sample ``index``: SeedSequence(seed, spawn_key=(stream, index))."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, index)))


def rounded_fractions(fractions: np.ndarray, decimals: int = 6) -> np.ndarray:
    """Fractions rounded to ``decimals``, the rounding residue added to the largest so they sum to 1."""
    scale = 10 ** decimals
    q = np.round(np.asarray(fractions, dtype=np.float64) * scale).astype(np.int64)
    q[int(np.argmax(q))] += scale - int(q.sum())
    return q / scale


def fraction_fields(fractions: np.ndarray) -> dict[str, str]:
    """The ``frac_<class>`` and ``land_cover`` (class of the largest fraction) CSV fields of one place."""
    rounded = rounded_fractions(fractions)
    fields = {col: f"{v:.6f}" for col, v in zip(FRACTION_COLUMNS, rounded)}
    fields["land_cover"] = CLASSES[int(np.argmax(rounded))]
    return fields


def latent_fields(latents: Latents, i: int = 0) -> dict[str, str]:
    """The latent CSV fields (``activity``, ``traffic``, ...) of place ``i``, three decimals."""
    return {name: f"{value:.3f}" for name, value in latents.row(i).items()}


def make_pair(job: PairJob) -> dict[str, str]:
    """Render, synthesise and write one pair; return its metadata row."""
    from model.bundle.audio import AudioConfig, logmel_from_waveform, write_spectrogram_jpeg

    rng = sample_rng(job.seed, job.index)
    key = KEY_OFFSET + job.index
    world = World(job.seed)
    place = render_place(world, job.x, job.y, job.size, job.gsd, rng)
    latents = place_latents(world, job.x, job.y, place.fractions[None])
    sound = soundscape(source_levels(latents)[0], rng.uniform(*job.duration), rng)
    write_jpeg(place.image, job.out_dir / "images" / f"{key}.jpg")
    write_png(place.mask, job.out_dir / "masks" / f"{key}.png")
    write_audio(sound.waveform, job.out_dir / "audio" / f"{key}.mp3", SAMPLE_RATE)
    logmel = logmel_from_waveform(sound.waveform, AudioConfig(sample_rate=SAMPLE_RATE))
    write_spectrogram_jpeg(logmel, job.out_dir / "spectrograms" / f"{key}.jpg")
    return {
        "key": str(key),
        "longitude": f"{job.longitude:.6f}",
        "latitude": f"{job.latitude:.6f}",
        "title": title(sound.dominant, place.land_cover),
        "description": description(sound.phrases, sound.event),
        **fraction_fields(place.fractions),
        "dominant": sound.dominant,
        "gsd": f"{job.gsd:g}",  # metres per pixel of the image
        **latent_fields(latents),
    }


def check_common(samples: int, size: int, gsd: float = PAIR_GSD) -> None:
    """Validate the options shared by the writers; raise SynthError naming the bad one."""
    if int(samples) < 1:
        raise SynthError(f"--samples must be at least 1, got {samples}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise SynthError(f"--size must be {MIN_SIZE}..{MAX_SIZE} pixels, got {size}")
    if not 0.05 <= float(gsd) <= 10.0:
        raise SynthError(f"--gsd must be 0.05..10 metres per pixel, got {gsd}")


def check_duration(duration: tuple[float, float]) -> tuple[float, float]:
    """Validate a (min, max) duration in seconds; raise SynthError naming the problem."""
    low, high = (float(d) for d in duration)
    if not 0.5 <= low <= high <= MAX_DURATION:
        raise SynthError(f"--duration must satisfy 0.5 <= MIN <= MAX <= {MAX_DURATION:g} seconds, got {low:g} {high:g}")
    return low, high


def write_pairs(
    out_dir: str | os.PathLike,
    samples: int,
    size: int = 512,
    seed: int = 0,
    duration: tuple[float, float] = (10.0, 30.0),
    workers: int | None = None,
    gsd: float = PAIR_GSD,
    progress: bool = True,
) -> Path:
    """Write ``samples`` SoundingEarth-format pairs of world ``seed`` to ``out_dir``; return it.

    size: image side in pixels (32..1024) at ``gsd`` metres per pixel; duration: (min, max)
    seconds of audio; workers: processes (None: one per core for 16 samples or more).
    metadata.csv is written last, so it only appears once every pair is on disk.
    """
    check_common(samples, size, gsd)
    duration = check_duration(duration)
    out = prepare_dir(out_dir)
    for sub in SUBFOLDERS:
        (out / sub).mkdir(exist_ok=True)
    world = World(seed)
    xs, ys = random_positions(world, int(samples), sample_rng(seed, 0, stream=0))
    lons, lats = world.lonlat(xs, ys)
    jobs = [
        PairJob(out, seed, i, float(x), float(y), float(lon), float(lat), int(size), float(gsd), duration)
        for i, (x, y, lon, lat) in enumerate(zip(xs, ys, lons, lats))
    ]
    rows = run_jobs(make_pair, jobs, workers, "pairs", progress)
    write_csv(rows, COLUMNS, out / "metadata.csv")
    return out
