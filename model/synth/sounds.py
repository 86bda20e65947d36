"""Sound signatures of the synthetic world's sound sources (22,050 Hz mono), and incidental events.

Noise is coloured in the frequency domain: a complex Gaussian spectrum times a gain ``G(f)``,
inverse-FFT'd. Gains are built from ``band(f, lo, hi) = 1 / sqrt((1 + (lo/f)^4) (1 + (f/hi)^4))``
(a second-order band-pass, Hz) and ``tilt(f, a) = (f / 1 kHz)^(-a/2)`` (a 1/f^a power spectrum).

Signatures (each a function ``(n samples, rng) -> (unit-RMS waveform, phrase)``, :data:`SIGNATURES`
by source name; how loud each is at a place is :mod:`model.synth.soundscape`'s business):
- traffic: rumble (25-180 Hz), engine harmonics of a wandering 40-80 Hz fundamental, cars passing
  (200-3000 Hz noise under Gaussian envelopes of 0.8-2.5 s), now and then a car horn;
- voices: two to five talkers, each a glottal tone (a sawtooth of fundamental 95-280 Hz, gliding)
  shaped by a 300-3400 Hz band, chopped into syllables at 3-6 Hz and into phrases of 1-4 s;
- machinery: an engine (22-35 Hz fundamental, six harmonics, plus 60-500 Hz noise) passing by,
  or a generator's steady hum (45-60 Hz);
- insects: crickets (3.8-6 kHz carriers pulsed at 25-45 Hz in chirps of 1.5-4 Hz) and cicada hiss
  (6-9 kHz);
- birdsong: two to four species singing phrases of 40-160 ms syllables (up, down or trilled sweeps
  between 1.8 and 8 kHz), leaf rustle;
- wind: gusts (0.2-0.35 per second) of grass rustle (300-5000 Hz, 12 Hz flutter) and low wind
  (15-400 Hz, 1/f^1.5), in random proportions, sometimes a whistle (600-1400 Hz);
- water: waves (60-7000 Hz noise swelling with a 4-9 s period) and flowing water (700-8000 Hz
  noise under a 25 Hz babble envelope), in random proportions.

Events (:data:`EVENTS`: a dog, an aeroplane, church bells) are incidental sounds laid over a mix.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import scipy.fft

SAMPLE_RATE = 22050


def _band(f: np.ndarray, lo: float, hi: float) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        low = np.float32(lo) / f
        high = f / np.float32(hi)
        low *= low
        high *= high
        gain = 1.0 / np.sqrt((1.0 + low * low) * (1.0 + high * high))
    return np.nan_to_num(gain, nan=0.0)


def _tilt(f: np.ndarray, a: float) -> np.ndarray:
    return (np.maximum(f, np.float32(10.0)) / np.float32(1000.0)) ** np.float32(-a / 2.0)


@lru_cache(maxsize=8)
def _frequencies(size: int) -> np.ndarray:
    """rfft bin frequencies (Hz, float32) of a ``size``-sample frame; read-only, cached."""
    freqs = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE).astype(np.float32)
    freqs.setflags(write=False)
    return freqs


def shaped_noise(n: int, rng: np.random.Generator, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Gaussian noise of ``n`` samples with amplitude spectrum ``gain(f)`` (f in Hz), unit RMS."""
    size = scipy.fft.next_fast_len(n, real=True)
    freqs = _frequencies(size)
    spectrum = rng.standard_normal(2 * freqs.size, dtype=np.float32).view(np.complex64)
    spectrum *= gain(freqs).astype(np.float32)
    y = scipy.fft.irfft(spectrum, size)[:n]
    return y / (np.sqrt(np.mean(y * y)) + 1e-12)


def smooth_random(n: int, rng: np.random.Generator, rate: float, lo: float, hi: float) -> np.ndarray:
    """A slowly varying envelope: uniform(lo, hi) control points ``rate`` per second, linearly joined."""
    points = int(n / SAMPLE_RATE * rate) + 2
    values = rng.uniform(lo, hi, points)
    return np.interp(np.linspace(0.0, points - 1.0, n), np.arange(points), values).astype(np.float32)


def _unit(y: np.ndarray) -> np.ndarray:
    return (y / (np.sqrt(np.mean(y * y)) + 1e-12)).astype(np.float32)


def _times(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _harmonics(f0: np.ndarray, count: int) -> np.ndarray:
    """Sum of ``count`` harmonics with amplitudes 1/k of a time-varying fundamental f0 (Hz)."""
    phase = 2.0 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    return sum(np.sin(k * phase) / k for k in range(1, count + 1))


def _gaussian_bumps(n: int, rng: np.random.Generator, rate: float, width: tuple[float, float]) -> np.ndarray:
    """Sum of Gaussian envelopes (sigma in seconds from ``width``) at Poisson times, ``rate`` per s."""
    env = np.zeros(n, dtype=np.float32)
    count = rng.poisson(rate * n / SAMPLE_RATE) + 1
    for centre, sigma, amp in zip(rng.uniform(0, n, count), rng.uniform(*width, count), rng.uniform(0.3, 1.0, count)):
        half = int(3 * sigma * SAMPLE_RATE)
        lo, hi = max(0, int(centre) - half), min(n, int(centre) + half)
        if hi > lo:
            t = (np.arange(lo, hi) - centre) / (sigma * SAMPLE_RATE)
            env[lo:hi] += amp * np.exp(-0.5 * t * t)
    return env


def traffic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Traffic: rumble, engine harmonics, passing cars, sometimes a horn."""
    rumble = shaped_noise(n, rng, lambda f: _band(f, 25, 180) * _tilt(f, 1.0))
    f0 = 40.0 + 40.0 * smooth_random(n, rng, 0.2, 0.0, 1.0)
    engine = _unit(_harmonics(f0, 5)) * smooth_random(n, rng, 0.3, 0.3, 1.0)
    cars = shaped_noise(n, rng, lambda f: _band(f, 200, 3000) * _tilt(f, 0.5))
    cars *= _gaussian_bumps(n, rng, rng.uniform(0.15, 0.5), (0.8, 2.5))
    y = 0.6 * rumble + 0.35 * engine + 0.9 * cars
    if rng.random() < 0.25:
        start, length = int(rng.uniform(0, max(1, n - SAMPLE_RATE))), int(rng.uniform(0.4, 0.8) * SAMPLE_RATE)
        t = _times(min(length, n - start))
        horn = np.sign(np.sin(2 * np.pi * 420 * t)) + np.sign(np.sin(2 * np.pi * 530 * t))
        y[start:start + t.size] += 0.5 * horn * np.hanning(t.size)
        return _unit(y), "traffic and a car horn"
    return _unit(y), "traffic"


def voices(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Two to five talkers: gliding glottal tones in a speech band, chopped into syllables and phrases."""
    t = _times(n)
    y = np.zeros(n)
    talkers = int(rng.integers(2, 6))
    high = 0
    for _ in range(talkers):
        f_base = rng.uniform(95.0, 280.0)
        high += f_base > 220.0
        f0 = f_base * (1.0 + 0.12 * smooth_random(n, rng, 3.0, -1.0, 1.0))
        tone = 2.0 * np.mod(np.cumsum(f0) / SAMPLE_RATE + rng.random(), 1.0) - 1.0  # sawtooth: all harmonics, 1/k
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3.0, 6.0) * t + rng.uniform(0, 6.3)), 0.0, 1.0)
        phrases = (smooth_random(n, rng, rng.uniform(0.25, 1.0), 0.0, 1.0) > 0.45).astype(np.float32)
        y += rng.uniform(0.4, 1.0) * tone * syllables * phrases
    shaped = band_filter(y, 300.0, 3400.0)
    murmur = 0.25 * shaped_noise(n, rng, lambda f: _band(f, 200, 2500)) * smooth_random(n, rng, 1.0, 0.3, 1.0)
    phrase = "children playing" if high >= 2 else ("people talking" if talkers < 4 else "a crowd of voices")
    return _unit(_unit(shaped) + murmur), phrase


def band_filter(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``y`` through the band-pass ``band(f, lo, hi)`` (Hz), applied in the frequency domain."""
    size = scipy.fft.next_fast_len(y.size, real=True)
    spectrum = scipy.fft.rfft(y, size)
    spectrum *= _band(_frequencies(size), lo, hi)
    return scipy.fft.irfft(spectrum, size)[: y.size]


def machinery(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """An engine passing by (a tractor, a digger) or a generator's steady hum."""
    if rng.random() < 0.7:
        f0 = rng.uniform(22, 35) * (1.0 + 0.05 * smooth_random(n, rng, 0.5, -1.0, 1.0))
        engine = _unit(_harmonics(f0, 6)) + 0.5 * shaped_noise(n, rng, lambda f: _band(f, 60, 500))
        centre, width = rng.uniform(0.2, 0.8) * n, rng.uniform(0.3, 0.8) * n
        passing = 0.25 + 0.75 * np.exp(-0.5 * ((np.arange(n) - centre) / width) ** 2)
        return _unit(engine * passing), "a tractor working"
    f0 = np.full(n, rng.uniform(45.0, 60.0))
    hum = _unit(_harmonics(f0, 8)) + 0.3 * shaped_noise(n, rng, lambda f: _band(f, 80, 1200))
    return _unit(hum), "a generator humming"


def insects(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Crickets and cicada hiss."""
    t = _times(n)
    chirps = np.zeros(n)
    for _ in range(rng.integers(2, 4)):
        carrier = np.sin(2 * np.pi * rng.uniform(3800, 6000) * t)
        pulse = np.sin(np.pi * rng.uniform(25, 45) * t) ** 2
        chirp = np.clip(4.0 * (np.sin(2 * np.pi * rng.uniform(1.5, 4.0) * t + rng.uniform(0, 6.3)) - 0.2), 0, 1)
        chirps += rng.uniform(0.4, 1.0) * carrier * pulse * chirp
    hiss = shaped_noise(n, rng, lambda f: _band(f, 6000, 9000)) * smooth_random(n, rng, 0.5, 0.3, 1.0)
    return _unit(0.8 * _unit(chirps) + 0.25 * hiss), "crickets and cicadas"


def wind(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Gusts of grass rustle and low wind, in random proportions, sometimes a whistle."""
    gust = smooth_random(n, rng, rng.uniform(0.2, 0.35), 0.05, 1.0) ** 1.5
    rustle = smooth_random(n, rng, 12.0, 0.55, 1.0)
    grass = shaped_noise(n, rng, lambda f: _band(f, 300, 5000) * _tilt(f, 0.5)) * rustle
    low = shaped_noise(n, rng, lambda f: _band(f, 15, 400) * _tilt(f, 1.5))
    w_grass = rng.uniform(0.0, 1.0)
    y = (w_grass * grass + (1.0 - w_grass) * low) * gust
    phrase = "wind in the grass" if w_grass > 0.5 else "gusts of wind"
    if rng.random() < 0.3:
        fw = rng.uniform(600, 1400)
        whistle = shaped_noise(n, rng, lambda f: _band(f, 0.93 * fw, 1.07 * fw) ** 4)
        y = y + 0.3 * whistle * gust ** 1.5
        phrase = "wind whistling"
    return _unit(y), phrase


def _syllable(duration: float, f_lo: float, span: float, kind: int) -> np.ndarray:
    """One bird syllable: a Hann-windowed sweep up (kind 0), down (1) or trill (2) in Hz."""
    t = _times(max(8, int(duration * SAMPLE_RATE)))
    x = t / duration
    freq = (f_lo + span * x, f_lo + span * (1.0 - x), f_lo + span * 0.5 * (1.0 + np.sin(2 * np.pi * 25.0 * t)))[kind]
    phase = 2.0 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    return (np.sin(phase) + 0.2 * np.sin(2.0 * phase)) * np.hanning(t.size)


def birdsong(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Birdsong of two to four species, with leaf rustle."""
    birds = np.zeros(n)
    for _ in range(rng.integers(2, 5)):
        f_lo, span = rng.uniform(1800, 5500), rng.uniform(300, 2500)
        duration, kind = rng.uniform(0.04, 0.16), int(rng.integers(0, 3))
        syllables, gap, period = int(rng.integers(3, 10)), rng.uniform(0.02, 0.1), rng.uniform(1.5, 5.0)
        amp = rng.uniform(0.3, 1.0)
        song = _syllable(duration, f_lo, span, kind)
        start = rng.uniform(0, period)
        while start < n / SAMPLE_RATE:
            for k in range(syllables):
                i = int((start + k * (duration + gap)) * SAMPLE_RATE)
                part = song[: max(0, min(song.size, n - i))]
                birds[i:i + part.size] += amp * part
            start += period * rng.uniform(0.7, 1.3)
    leaves = shaped_noise(n, rng, lambda f: _band(f, 1500, 7000)) * smooth_random(n, rng, 3.0, 0.3, 1.0)
    return _unit(_unit(birds) + 0.15 * leaves), "birdsong"


def water(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Waves swelling every 4-9 s and babbling flowing water, in random proportions."""
    t = _times(n)
    period = rng.uniform(4.0, 9.0)
    swell = 0.15 + 0.85 * (0.5 + 0.5 * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3))) ** 4
    waves = shaped_noise(n, rng, lambda f: _band(f, 60, 7000) * _tilt(f, 0.7)) * swell
    babble = smooth_random(n, rng, 25.0, 0.4, 1.0)
    flow = shaped_noise(n, rng, lambda f: _band(f, 700, 8000)) * babble
    w_waves, w_flow = rng.uniform(0.0, 1.0, 2)
    phrase = "waves and flowing water"
    if w_waves > 0.75 and w_flow < 0.4:
        phrase = "waves"
    elif w_flow > 0.75 and w_waves < 0.4:
        phrase = "flowing water"
    return _unit((0.2 + w_waves) * waves + (0.2 + w_flow) * flow), phrase


SIGNATURES = {"traffic": traffic, "voices": voices, "machinery": machinery, "insects": insects,
              "birdsong": birdsong, "wind": wind, "water": water}
"""Signature functions by sound-source name: (n samples, rng) -> (unit-RMS waveform, phrase)."""


def _dog(n: int, rng: np.random.Generator) -> np.ndarray:
    y = np.zeros(n)
    start = rng.uniform(0, max(0.1, n / SAMPLE_RATE - 3.0))
    f0 = rng.uniform(350, 700)
    for _ in range(rng.integers(2, 7)):
        t = _times(int(rng.uniform(0.12, 0.2) * SAMPLE_RATE))
        bark = sum(np.sin(2 * np.pi * k * f0 * (1 - 0.3 * t) * t) / k for k in range(1, 6))
        bark *= np.minimum(t / 0.01, 1.0) * np.exp(-t / 0.06)
        i = int(start * SAMPLE_RATE)
        part = bark[: max(0, min(bark.size, n - i))]
        y[i:i + part.size] += part
        start += rng.uniform(0.3, 0.8)
    return y


def _aeroplane(n: int, rng: np.random.Generator) -> np.ndarray:
    noise = shaped_noise(n, rng, lambda f: _band(f, 50, 2500) * _tilt(f, 1.0))
    centre, width = rng.uniform(0.3, 0.7) * n, rng.uniform(0.3, 0.6) * n / 2
    return noise * np.exp(-0.5 * ((np.arange(n) - centre) / width) ** 2)


def _bells(n: int, rng: np.random.Generator) -> np.ndarray:
    y = np.zeros(n)
    f0, interval, tau = rng.uniform(300, 600), rng.uniform(1.2, 2.0), rng.uniform(1.0, 2.5)
    t = _times(min(n, int(4 * tau * SAMPLE_RATE)))
    partials = ((0.5, 0.6), (1.0, 1.0), (1.19, 0.5), (1.5, 0.4), (2.0, 0.5), (2.52, 0.25), (3.0, 0.2))
    strike = sum(a * np.sin(2 * np.pi * r * f0 * t) * np.exp(-t * r / tau) for r, a in partials)
    start = rng.uniform(0, max(0.1, n / SAMPLE_RATE / 2))
    for _ in range(rng.integers(3, 9)):
        i = int(start * SAMPLE_RATE)
        part = strike[: max(0, min(strike.size, n - i))]
        y[i:i + part.size] += part
        start += interval
    return y


EVENTS = {"a dog barking": _dog, "an aeroplane passing over": _aeroplane, "church bells": _bells}


def background(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink background noise (20 Hz - 10 kHz, 1/f), unit RMS."""
    return shaped_noise(n, rng, lambda f: _band(f, 20, 10000) * _tilt(f, 1.0))


def event_sound(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """The incidental event ``name`` (a key of EVENTS), ``n`` samples, unit RMS."""
    return _unit(EVENTS[name](n, rng))
