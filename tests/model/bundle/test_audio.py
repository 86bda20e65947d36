"""The audio front-end on real recordings (../shared/data/audio)."""
from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf

from model.bundle.audio import (SE_HIGH, SE_LOW, AudioConfig, AudioError, convert_levels, load_audio,
                         load_logmel, logmel_from_waveform, read_spectrogram_jpeg, to_chunks,
                         write_spectrogram_jpeg)

from tests.bundles import SHARED as SHARED_DATA

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
    (lambda p: p.write_bytes(b"this is not audio at all" * 100), "cannot decode"),
    (lambda p: sf.write(str(p), np.zeros(22050, np.float32), 22050), "silent"),
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


def test_config_round_trip_and_validation():
    cfg = AudioConfig(n_fft=1024, db_ref=1.0)
    assert AudioConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        AudioConfig(level_encoding="linear")
    with pytest.raises(ValueError):
        AudioConfig.from_dict({"sample_rate": 22050, "bogus": 1})
