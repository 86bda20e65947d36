"""Audio front-end: decode a recording, turn it into a log-mel spectrogram, cut it into chunks.

The pipeline, for a waveform ``y`` (mono, float32, ``sample_rate`` Hz):

1. power mel spectrogram ``S = mel(|STFT(y)|^2)`` with ``n_fft`` samples per frame, ``hop_length``
   samples between frames and ``n_mels`` triangular bands between ``fmin`` and ``fmax`` Hz;
2. level in decibels ``dB = 10 * log10(max(S, 1e-10) / ref) + db_offset``, where ``ref`` is the
   loudest bin of the recording (``db_ref="max"``) or a fixed power (``db_ref=<number>``);
3. the level encoding:
   - ``"soundingearth"`` (the published checkpoints' input): ``exp(dB / 10)`` clipped to
     ``[exp(-1.5), exp(0.5)]``, i.e. a -15 dB to +5 dB window. With ``db_ref="max"`` and
     ``db_offset=5`` the loudest bin of a recording sits at the top of that window.
   - ``"db"``: the decibels themselves, clipped to ``[db_offset - 80, db_offset]``.

Spectrogram JPEGs (the SoundingEarth dataset's format) hold the ``"soundingearth"`` encoding as
8-bit grey levels: a pixel ``p`` means ``LOW + p / 255 * (HIGH - LOW)``; row 0 is the lowest mel
band, one column per frame.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from model.core.atomic import atomic_path
from model.core.errors import GeoaudioError, one_line

SE_LOW = math.exp(-1.5)
SE_HIGH = math.exp(0.5)
LEVEL_ENCODINGS = ("soundingearth", "db")
DB_RANGE = 80.0  # dB kept below the top of the window by the "db" encoding
SILENCE_PEAK = 1e-5  # a waveform whose absolute peak is below this (full scale = 1) is silent


class AudioError(GeoaudioError, ValueError):
    """A recording that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class AudioConfig:
    """How recordings become encoder inputs; recorded in every model bundle.

    sample_rate: Hz; n_fft and hop_length: samples; fmin, fmax: Hz; chunk_frames: frames per
    encoder input (128 frames at 22,050 Hz and hop 512 is 2.97 s); db_ref: "max" or a power;
    db_offset: dB added after referencing.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 11025.0
    chunk_frames: int = 128
    level_encoding: str = "soundingearth"
    db_ref: str | float = "max"
    db_offset: float = 5.0

    def __post_init__(self) -> None:
        if self.level_encoding not in LEVEL_ENCODINGS:
            raise AudioError(f"level_encoding must be one of {LEVEL_ENCODINGS}, got {self.level_encoding!r}")
        if self.fmax > self.sample_rate / 2 + 1e-6:
            raise AudioError(f"fmax {self.fmax} Hz is above the Nyquist frequency of {self.sample_rate} Hz")
        if not (self.db_ref == "max" or isinstance(self.db_ref, (int, float))):
            raise AudioError(f"db_ref must be 'max' or a number, got {self.db_ref!r}")

    @property
    def chunk_seconds(self) -> float:
        """Duration of one chunk in seconds: chunk_frames * hop_length / sample_rate."""
        return self.chunk_frames * self.hop_length / self.sample_rate

    @property
    def silence_level(self) -> float:
        """The encoded value of the bottom of the level window (used to pad short clips)."""
        return SE_LOW if self.level_encoding == "soundingearth" else self.db_offset - DB_RANGE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AudioConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise AudioError(f"unknown audio config fields: {sorted(unknown)}")
        return cls(**d)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode with soundfile (wav, flac, ogg, mp3); librosa/audioread as a fallback."""
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return data.mean(axis=1), int(sr)
    except Exception as sf_error:  # noqa: BLE001 - any decoder failure falls back once
        try:
            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y, sr = librosa.load(str(path), sr=None, mono=True)
            return y.astype(np.float32), int(sr)
        except Exception:  # noqa: BLE001
            raise AudioError(f"{path}: cannot decode audio ({one_line(sf_error)})") from None


def load_audio(path: str | os.PathLike, sample_rate: int = 22050) -> np.ndarray:
    """Read a recording as a mono float32 waveform at ``sample_rate`` Hz (channels averaged)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    y, sr = _decode(path)
    if y.size == 0:
        raise AudioError(f"{path}: no audio samples (empty or truncated file)")
    if not np.all(np.isfinite(y)):
        raise AudioError(f"{path}: audio contains non-finite samples (corrupt file)")
    if float(np.max(np.abs(y))) < SILENCE_PEAK:
        raise AudioError(f"{path}: recording is silent (peak below {SILENCE_PEAK:g} of full scale)")
    if sr != sample_rate:
        import librosa

        y = librosa.resample(y, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def _encode_levels(db: np.ndarray, config: AudioConfig) -> np.ndarray:
    if config.level_encoding == "soundingearth":
        return np.clip(np.exp(db / 10.0), SE_LOW, SE_HIGH)
    return np.clip(db, config.db_offset - DB_RANGE, config.db_offset)


def logmel_from_waveform(y: np.ndarray, config: AudioConfig | None = None) -> np.ndarray:
    """Log-mel spectrogram of a mono waveform at ``config.sample_rate``: (n_mels, T) float32.

    T = 1 + len(y) // hop_length frames (centred frames); values in the config's level encoding.
    """
    import librosa

    config = config or AudioConfig()
    power = librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float32), sr=config.sample_rate, n_fft=config.n_fft,
        hop_length=config.hop_length, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax,
        power=2.0,
    )
    power = np.maximum(power, 1e-10)
    ref = float(power.max()) if config.db_ref == "max" else float(config.db_ref)
    db = 10.0 * np.log10(power / ref) + config.db_offset
    return _encode_levels(db, config).astype(np.float32)


def load_logmel(path: str | os.PathLike, config: AudioConfig | None = None) -> np.ndarray:
    """Decode ``path`` and return its log-mel spectrogram, (n_mels, T) float32."""
    config = config or AudioConfig()
    return logmel_from_waveform(load_audio(path, config.sample_rate), config)


def to_chunks(
    logmel: np.ndarray,
    config: AudioConfig | None = None,
    rng: np.random.Generator | None = None,
    source: str = "clip",
) -> np.ndarray:
    """Cut a (n_mels, T) spectrogram into encoder inputs, (n, 1, n_mels, chunk_frames) float32.

    Without ``rng``: every whole, non-overlapping chunk (a trailing part shorter than a chunk is
    dropped). With ``rng``: one chunk at a uniformly random start frame (training crops).
    A clip shorter than one chunk is padded on the right with the encoding's silence level and a
    warning names ``source``.
    """
    config = config or AudioConfig()
    frames = config.chunk_frames
    n_mels, t = logmel.shape
    if t < frames:
        warnings.warn(
            f"{source}: {t} frames is shorter than one {frames}-frame chunk "
            f"({config.chunk_seconds:.2f} s); padded with silence",
            stacklevel=2,
        )
        pad = np.full((n_mels, frames - t), config.silence_level, dtype=np.float32)
        logmel = np.concatenate([logmel, pad], axis=1)
        t = frames
    if rng is not None:
        start = int(rng.integers(0, t - frames + 1))
        return np.ascontiguousarray(logmel[None, None, :, start:start + frames], dtype=np.float32)
    n = t // frames
    chunks = logmel[:, : n * frames].reshape(n_mels, n, frames).transpose(1, 0, 2)
    return np.ascontiguousarray(chunks[:, None], dtype=np.float32)


def soundingearth_to_pixels(values: np.ndarray) -> np.ndarray:
    """Encoded levels -> 8-bit grey: p = round((v - LOW) / (HIGH - LOW) * 255), clipped."""
    p = np.rint((np.asarray(values, dtype=np.float64) - SE_LOW) / (SE_HIGH - SE_LOW) * 255.0)
    return np.clip(p, 0, 255).astype(np.uint8)


def pixels_to_soundingearth(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey -> encoded levels: v = LOW + p / 255 * (HIGH - LOW), float32."""
    return (SE_LOW + np.asarray(pixels, dtype=np.float32) / 255.0 * (SE_HIGH - SE_LOW)).astype(np.float32)


def write_spectrogram_jpeg(logmel: np.ndarray, path: str | os.PathLike, quality: int = 95) -> Path:
    """Write a ``"soundingearth"``-encoded (n_mels, T) spectrogram as an 8-bit JPEG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(soundingearth_to_pixels(logmel), mode="L").save(tmp, format="JPEG", quality=quality)
    return Path(path)


def read_spectrogram_jpeg(path: str | os.PathLike, n_mels: int = 128) -> np.ndarray:
    """Read a SoundingEarth spectrogram JPEG as (n_mels, T) float32 ``"soundingearth"`` levels."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such spectrogram file")
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as e:
        raise AudioError(f"{path}: cannot read spectrogram image ({one_line(e)})") from None
    if pixels.shape[0] != n_mels:
        raise AudioError(f"{path}: spectrogram has {pixels.shape[0]} rows, expected {n_mels} mel bands")
    return pixels_to_soundingearth(pixels)


def convert_levels(logmel: np.ndarray, source: AudioConfig, target: AudioConfig) -> np.ndarray:
    """Re-express levels of one encoding in another (dB = 10 ln v for the SoundingEarth encoding)."""
    if source.level_encoding == target.level_encoding:
        return logmel
    if source.level_encoding == "soundingearth":
        db = 10.0 * np.log(np.asarray(logmel, dtype=np.float64))
    else:
        db = np.asarray(logmel, dtype=np.float64)
    return _encode_levels(db, target).astype(np.float32)
