"""The audio front-end on real recordings (../shared/data/audio)."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf

from model.bundle.audio import (QUERY_MAX_SECONDS, SE_HIGH, SE_LOW, AudioConfig, AudioError, audio_duration,
                                convert_levels, load_audio, load_logmel, logmel_from_waveform,
                                read_spectrogram_jpeg, to_chunks, write_spectrogram_jpeg)

from tests.bundles import ROOT, SHARED as SHARED_DATA

AUDIO = SHARED_DATA / "audio"


def test_robin_mp3_becomes_128_by_t_logmel():
    m = load_logmel(AUDIO / "robin.mp3")
    cfg = AudioConfig()
    seconds = sf.info(str(AUDIO / "robin.mp3")).duration
    assert m.dtype == np.float32 and m.shape[0] == 128
    # centred frames: 1 + samples // hop
    assert abs(m.shape[1] - (1 + seconds * cfg.sample_rate / cfg.hop_length)) <= 3
    assert m.min() >= SE_LOW - 1e-6 and m.max() <= SE_HIGH + 1e-6
    # the loudest bin sits at the top of the window (db_ref="max", db_offset=+5 dB)
    assert math.isclose(float(m.max()), SE_HIGH, rel_tol=1e-5)


def test_mp3_and_ogg_of_the_same_recording_agree():
    a = load_logmel(AUDIO / "robin.mp3")
    b = load_logmel(AUDIO / "robin.ogg")
    t = min(a.shape[1], b.shape[1])
    # lossy codecs differ in detail; the spectrogram as a whole is the same sound
    corr = np.corrcoef(a[:, :t].ravel(), b[:, :t].ravel())[0, 1]
    assert corr > 0.9


def test_resampling_to_the_configured_rate():
    y = load_audio(AUDIO / "robin.ogg", sample_rate=16000)
    seconds = sf.info(str(AUDIO / "robin.ogg")).duration
    assert abs(len(y) / 16000 - seconds) < 0.01


def test_chunks_cover_long_recordings_and_pad_short_ones():
    cfg = AudioConfig()
    long = load_logmel(AUDIO / "humpback.ogg", cfg)
    chunks = to_chunks(long, cfg)
    assert chunks.shape == (long.shape[1] // 128, 1, 128, 128)
    np.testing.assert_array_equal(chunks[1, 0], long[:, 128:256])
    short = load_logmel(AUDIO / "robin.ogg", cfg)
    with pytest.warns(UserWarning, match="padded"):
        padded = to_chunks(short, cfg, source="robin.ogg")
    assert padded.shape == (1, 1, 128, 128)
    assert np.all(padded[0, 0, :, short.shape[1]:] == np.float32(cfg.silence_level))


def test_random_chunk_is_a_window_of_the_spectrogram():
    cfg = AudioConfig()
    m = load_logmel(AUDIO / "humpback.ogg", cfg)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(5):
        c = to_chunks(m, cfg, rng=rng)[0, 0]
        hits = [s for s in range(m.shape[1] - 127) if np.array_equal(m[:, s:s + 128], c)]
        assert hits
        starts.add(hits[0])
    assert len(starts) > 1


def test_spectrogram_jpeg_round_trip_follows_the_reference_encoding(tmp_path):
    m = load_logmel(AUDIO / "robin.ogg")
    path = write_spectrogram_jpeg(m, tmp_path / "s.jpg")
    back = read_spectrogram_jpeg(path)
    assert back.shape == m.shape
    step = (SE_HIGH - SE_LOW) / 255
    # JPEG is lossy: most pixels within a few grey levels
    assert np.median(np.abs(back - m)) < 3 * step
    # exact mapping of grey levels: p -> LOW + p / 255 * (HIGH - LOW)
    from PIL import Image

    grey = np.tile(np.arange(256, dtype=np.uint8), (128, 1))
    Image.fromarray(grey).save(tmp_path / "g.png")
    shutil.copy(tmp_path / "g.png", tmp_path / "g.jpg")
    levels = read_spectrogram_jpeg(tmp_path / "g.jpg")
    np.testing.assert_allclose(levels[0, [0, 255]], [SE_LOW, SE_HIGH], rtol=1e-6)


def test_db_encoding_and_conversion():
    y, sr = sf.read(str(AUDIO / "robin.ogg"), dtype="float32")
    cfg_se = AudioConfig()
    cfg_db = AudioConfig(level_encoding="db")
    se = logmel_from_waveform(y, cfg_se)
    db = logmel_from_waveform(y, cfg_db)
    assert db.max() == pytest.approx(5.0, abs=1e-4) and db.min() >= 5.0 - 80 - 1e-4
    np.testing.assert_allclose(convert_levels(db, cfg_db, cfg_se), se, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"this is not audio at all" * 100), r"not a readable audio file \(wav, flac, ogg, mp3\)"),
    (lambda p: sf.write(str(p), np.zeros(22050, np.float32), 22050), "silent"),
    (lambda p: sf.write(str(p), np.full(1, 0.5, np.float32), 22050), "shorter than one analysis frame"),
])
def test_bad_files_get_one_line_errors_naming_them(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AudioError, match=message) as info:
            load_logmel(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text


def test_truncated_file_is_an_error_or_a_shorter_clip(tmp_path):
    data = (AUDIO / "humpback.ogg").read_bytes()
    path = tmp_path / "truncated.ogg"
    path.write_bytes(data[:200])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AudioError, match="truncated.ogg"):
            load_logmel(path)


def test_missing_file():
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio("does/not/exist.wav")


@pytest.mark.parametrize("content", [b"just some text, not a recording\n" * 20,
                                     b"ID3\x03\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10])  # a tag, no frames
def test_an_mp3_that_is_not_audio_says_so(tmp_path, content):
    path = tmp_path / "song.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioError) as info:
        load_logmel(path)
    assert str(info.value) == f"{path}: not a readable audio file (wav, flac, ogg, mp3)"


def write_silence_with_a_click(path, seconds: float, rate: int = 8000):
    """A FLAC of ``seconds`` of 16-bit silence with one click (silence compresses: 3 h is ~0.3 MB)."""
    block = np.zeros(rate * 600, np.int16)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
        left = int(seconds * rate)
        while left > 0:
            block[:] = 0
            block[min(100, left - 1)] = 8000 if left == int(seconds * rate) else 0
            f.write(block[:min(left, len(block))])
            left -= min(left, len(block))
    return path


@pytest.fixture(scope="module")
def three_hours(tmp_path_factory):
    return write_silence_with_a_click(tmp_path_factory.mktemp("long") / "three_hours.flac", 3 * 3600)


def test_a_recording_over_the_limit_is_refused_from_its_header(three_hours):
    assert three_hours.stat().st_size < 2_000_000
    assert audio_duration(three_hours) == pytest.approx(3 * 3600)
    with pytest.raises(AudioError) as info:
        load_logmel(three_hours, max_seconds=QUERY_MAX_SECONDS)
    assert str(info.value) == f"{three_hours}: the recording lasts 3:00:00, more than the limit of 0:10:00 (h:mm:ss)"


def test_refusing_a_long_recording_takes_no_memory(three_hours):
    """In a fresh process, the peak resident size grows by less than 40 MB (decoding the file
    would take 345 MB at 8 kHz, and 950 MB more resampled to 22,050 Hz)."""
    script = (
        "import resource, sys, librosa, soundfile\n"
        "from model.bundle.audio import AudioError, load_logmel\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    load_logmel(sys.argv[1], max_seconds=600)\nexcept AudioError as e:\n    print(e, file=sys.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    done = subprocess.run([sys.executable, "-c", script, str(three_hours)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "more than the limit" in done.stderr, done.stderr
    assert int(done.stdout) < 40 * 1024  # kB


def test_a_header_that_hides_the_length_cannot_get_past_the_limit(tmp_path):
    """A FLAC whose STREAMINFO says 'length unknown': the decoder stops after the limit."""
    path = write_silence_with_a_click(tmp_path / "twenty_minutes.flac", 1200)
    data = bytearray(path.read_bytes())
    data[8 + 13] &= 0xF0  # STREAMINFO's 36-bit total sample count: 0 means unknown
    data[8 + 14:8 + 18] = bytes(4)
    path.write_bytes(bytes(data))
    assert audio_duration(path) is None
    with pytest.raises(AudioError, match="the recording lasts more than the limit of 0:10:00"):
        load_audio(path, max_seconds=600)


def test_config_round_trip_and_validation():
    cfg = AudioConfig(n_fft=1024, db_ref=1.0)
    assert AudioConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        AudioConfig(level_encoding="linear")
    with pytest.raises(ValueError):
        AudioConfig.from_dict({"sample_rate": 22050, "bogus": 1})
