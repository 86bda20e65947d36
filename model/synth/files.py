"""File writers of the synthetic world, each atomic (:func:`model.core.atomic.atomic_path`): an
interrupted run never leaves a half-written file under the final name."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from model.core.atomic import atomic_path
from model.synth.errors import SynthError


def prepare_dir(path: str | os.PathLike) -> Path:
    """Create an output folder (and parents); a path that exists as a file is a SynthError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SynthError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SynthError(f"{path}: cannot create folder ({e.strerror or e})") from None
    return path


def write_jpeg(rgb: np.ndarray, path: Path, quality: int = 90) -> Path:
    """Write an (H, W, 3) uint8 image as JPEG."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="JPEG", quality=quality)
    return path


def write_png(array: np.ndarray, path: Path) -> Path:
    """Write an (H, W) uint8 (grey) or (H, W, 3) uint8 (RGB) array as PNG."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB").save(tmp, format="PNG")
    return path


def write_audio(waveform: np.ndarray, path: Path, sample_rate: int) -> Path:
    """Write mono float audio as MP3 (``.mp3``) or 16-bit PCM WAV (``.wav``)."""
    import soundfile as sf

    fmt, subtype = {".mp3": ("MP3", "MPEG_LAYER_III"), ".wav": ("WAV", "PCM_16")}[path.suffix.lower()]
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.asarray(waveform, dtype=np.float32), sample_rate, format=fmt, subtype=subtype)
    return path


def write_csv(rows: Sequence[dict], columns: Sequence[str], path: Path) -> Path:
    """Write rows (dicts with the given columns) as CSV with a header line."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return path
