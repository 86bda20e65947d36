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

Decoding is bounded: with ``max_seconds`` (queries use :data:`QUERY_MAX_SECONDS`, 10 minutes) a
longer recording is refused with one line naming the file, its duration and the limit, read from
the header before anything is decoded (a 754 KB FLAC can hold 3 hours of silence, 950 MB as
float32 at 22,050 Hz), and the decoder never reads more than ``max_seconds`` whatever the header
claims. Refusing rather than keeping the first ``max_seconds`` is deliberate: a query embeds the
mean of all chunks, and a silently cut recording would be a different query. A file no decoder
recognises is "not a readable audio file (wav, flac, ogg, mp3)".

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

from model.bundle.validation import BundleValueError, check_audio
from model.core.atomic import atomic_path
from model.core.errors import GeoaudioError, one_line

SE_LOW = math.exp(-1.5)
SE_HIGH = math.exp(0.5)
LEVEL_ENCODINGS = ("soundingearth", "db")
DB_RANGE = 80.0  # dB kept below the top of the window by the "db" encoding
SILENCE_PEAK = 1e-5  # a waveform whose absolute peak is below this (full scale = 1) is silent
QUERY_MAX_SECONDS = 600.0  # longest recording a query embeds (geo.query --max-audio-seconds, the app)
AUDIO_FORMATS = "wav, flac, ogg, mp3"
UNKNOWN_FRAMES = 2 ** 62  # a header frame count this large means "length unknown" (streamed files)
# frames decoded at a time: 47.6 s at 22,050 Hz, 8 MiB of float32 stereo. Large, because libmpg123 restarts
# at each further read of an MP3 and prints "part2_3_length too large" to stderr (the samples are unchanged)
READ_BLOCK = 1 << 20


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
        """Every field in its range (``model.bundle.validation``); AudioError names the field."""
        if self.level_encoding not in LEVEL_ENCODINGS:
            raise AudioError(f"level_encoding must be one of {LEVEL_ENCODINGS}, got {self.level_encoding!r}")
        try:
            check_audio("audio", asdict(self))
        except BundleValueError as e:
            raise AudioError(str(e)) from None

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


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (seconds rounded up, so a recording just over a limit never reads as equal to it)."""
    total = math.ceil(seconds)
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def audio_duration(path: str | os.PathLike) -> float | None:
    """Seconds of audio the file's header declares (frames / sample rate; nothing is decoded), or
    None when the header does not say. AudioError "not a readable audio file" when no decoder
    (soundfile, then librosa/audioread) recognises it."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        frames, rate = info.frames, info.samplerate
    except Exception:  # noqa: BLE001 - any soundfile failure: ask librosa/audioread once
        try:
            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(librosa.get_duration(path=str(path)))
        except Exception:  # noqa: BLE001
            raise AudioError(f"{path}: not a readable audio file ({AUDIO_FORMATS})") from None
    return frames / rate if rate > 0 and 0 <= frames < UNKNOWN_FRAMES else None


def _too_long(path: Path, seconds: float | None, max_seconds: float) -> AudioError:
    """The one line for a recording of ``seconds`` (None: found while decoding) over the limit."""
    lasts = f"lasts {_clock(seconds)}, more than" if seconds is not None else "lasts more than"
    return AudioError(f"{path}: the recording {lasts} the limit of {_clock(max_seconds)} (h:mm:ss)")


def _read_mono(f: Any, limit: int) -> np.ndarray:
    """At most ``limit`` frames (all when negative) of an open soundfile, channels averaged block by
    block: memory grows with what is read, never with what the header claims."""
    parts, got = [], 0
    while limit < 0 or got < limit:
        block = f.read(READ_BLOCK if limit < 0 else min(READ_BLOCK, limit - got), dtype="float32", always_2d=True)
        if len(block) == 0:
            break
        parts.append(block.mean(axis=1, dtype=np.float32))
        got += len(block)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _decode(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode with soundfile (wav, flac, ogg, mp3), librosa/audioread as a fallback; at most
    ``max_seconds`` plus one sample are decoded (whatever the header claims), so memory is bounded."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            sr = int(f.samplerate)
            return _read_mono(f, -1 if max_seconds is None else math.ceil(max_seconds * sr) + 1), sr
    except Exception as sf_error:  # noqa: BLE001 - any decoder failure falls back once
        try:
            import librosa

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y, sr = librosa.load(str(path), sr=None, mono=True,
                                     duration=None if max_seconds is None else max_seconds + 1.0)
            return y.astype(np.float32), int(sr)
        except Exception:  # noqa: BLE001
            raise AudioError(f"{path}: cannot decode audio ({one_line(sf_error)})") from None


def load_audio(path: str | os.PathLike, sample_rate: int = 22050, max_seconds: float | None = None) -> np.ndarray:
    """Read a recording as a mono float32 waveform at ``sample_rate`` Hz (channels averaged).

    ``max_seconds`` (None: no limit) refuses a longer recording with one line naming the file, its
    duration and the limit: first from the header (nothing decoded), then, whatever the header
    says, by decoding at most ``max_seconds`` (channels are averaged block by block, so the waveform
    peaks at about ``2 * max_seconds * rate * 4`` bytes: 212 MB for 10 minutes at 44.1 kHz).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    declared = audio_duration(path)
    if max_seconds is not None and declared is not None and declared > max_seconds:
        raise _too_long(path, declared, max_seconds)
    y, sr = _decode(path, max_seconds)
    if max_seconds is not None and y.size > max_seconds * sr:
        raise _too_long(path, None, max_seconds)  # the header understated (or did not state) the length
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


def load_logmel(path: str | os.PathLike, config: AudioConfig | None = None,
                max_seconds: float | None = None) -> np.ndarray:
    """Decode ``path`` and return its log-mel spectrogram, (n_mels, T) float32.

    ``max_seconds``: refuse a longer recording (:func:`load_audio`; None: no limit). A recording
    shorter than one FFT frame (``n_fft`` samples) is refused: its spectrum would be the padding.
    """
    config = config or AudioConfig()
    y = load_audio(path, config.sample_rate, max_seconds)
    if y.size < config.n_fft:
        raise AudioError(f"{path}: {y.size / config.sample_rate * 1000:.1f} ms of audio is shorter than one "
                         f"analysis frame ({config.n_fft} samples, "
                         f"{config.n_fft / config.sample_rate * 1000:.0f} ms)")
    return logmel_from_waveform(y, config)


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
