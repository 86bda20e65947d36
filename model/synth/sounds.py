"""Sound signatures of the six classes and the soundscape of a place (22,050 Hz mono).

Noise is coloured in the frequency domain: a complex Gaussian spectrum times a gain ``G(f)``,
inverse-FFT'd. Gains are built from ``band(f, lo, hi) = 1 / sqrt((1 + (lo/f)^4) (1 + (f/hi)^4))``
(a second-order band-pass, Hz) and ``tilt(f, a) = (f / 1 kHz)^(-a/2)`` (a 1/f^a power spectrum).

Signatures (each scaled to unit RMS):
- urban: traffic rumble (25-180 Hz), engine harmonics of a wandering 40-80 Hz fundamental, cars
  passing (200-3000 Hz noise under Gaussian envelopes of 0.8-2.5 s), now and then a car horn;
- agriculture: crickets (3.8-6 kHz carriers pulsed at 25-45 Hz in chirps of 1.5-4 Hz), cicada
  hiss (6-9 kHz) and, often, a tractor (22-35 Hz fundamental with harmonics, passing by);
- rangeland: wind in grass (300-5000 Hz noise under slow gusts and 12 Hz rustle);
- forest: two to four bird species singing phrases of 40-160 ms syllables (up, down or trilled
  sweeps between 1.8 and 8 kHz), leaf rustle;
- water: waves (60-7000 Hz noise swelling with a 4-9 s period) and flowing water (700-8000 Hz
  noise under a 25 Hz babble envelope), in random proportions;
- barren: low wind (15-400 Hz, steep 1/f^1.5 slope) in gusts, sometimes a whistle, and it is
  quiet: its level is CLASS_LEVEL_DB = -14 dB below traffic.

A soundscape mixes the signatures as ``y = g (sum_c frac_c 10^(L_c/20) a_c s_c + b n + e)``:
``frac_c`` the centre-weighted class fractions, ``L_c`` the class level (dB), ``a_c`` a random
gain of +-3 dB, ``n`` pink background noise at -34..-22 dB, ``e`` an optional event (a dog, an
aeroplane, church bells) and ``g`` scaling the mix to an RMS of ``10^(U/20) sum_c frac_c 10^(L_c/20)``
with ``U`` uniform in -26..-14 dB (quiet places stay quiet); the peak is kept below 0.98.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import scipy.fft

SAMPLE_RATE = 22050
CLASS_LEVEL_DB = np.array([0.0, -3.0, -6.0, -2.0, 0.0, -14.0])
MIN_AUDIBLE_FRACTION = 0.02  # classes with a smaller fraction are not synthesised
EVENT_PROBABILITY = 0.35


@dataclass(frozen=True)
class Soundscape:
    """A synthesised recording: float32 waveform at ``SAMPLE_RATE`` Hz and what can be heard."""

    waveform: np.ndarray
    phrases: dict[int, str]
    event: str | None


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


def urban(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
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


def agriculture(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Crickets, cicada hiss and, often, a tractor passing."""
    t = _times(n)
    insects = np.zeros(n)
    for _ in range(rng.integers(2, 4)):
        carrier = np.sin(2 * np.pi * rng.uniform(3800, 6000) * t)
        pulse = np.sin(np.pi * rng.uniform(25, 45) * t) ** 2
        chirp = np.clip(4.0 * (np.sin(2 * np.pi * rng.uniform(1.5, 4.0) * t + rng.uniform(0, 6.3)) - 0.2), 0, 1)
        insects += rng.uniform(0.4, 1.0) * carrier * pulse * chirp
    hiss = shaped_noise(n, rng, lambda f: _band(f, 6000, 9000)) * smooth_random(n, rng, 0.5, 0.3, 1.0)
    y = 0.8 * _unit(insects) + 0.25 * hiss
    if rng.random() < 0.6:
        f0 = rng.uniform(22, 35) * (1.0 + 0.05 * smooth_random(n, rng, 0.5, -1.0, 1.0))
        engine = _unit(_harmonics(f0, 6)) + 0.5 * shaped_noise(n, rng, lambda f: _band(f, 60, 500))
        centre, width = rng.uniform(0.2, 0.8) * n, rng.uniform(0.3, 0.8) * n
        passing = 0.25 + 0.75 * np.exp(-0.5 * ((np.arange(n) - centre) / width) ** 2)
        y = y + 0.7 * engine * passing
        return _unit(y), "insects and a tractor"
    return _unit(y), "insects in the fields"


def rangeland(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Wind in grass: mid-band noise under slow gusts and a fast rustle."""
    gust = smooth_random(n, rng, 0.35, 0.1, 1.0) ** 1.5
    rustle = smooth_random(n, rng, 12.0, 0.55, 1.0)
    grass = shaped_noise(n, rng, lambda f: _band(f, 300, 5000) * _tilt(f, 0.5))
    low = shaped_noise(n, rng, lambda f: _band(f, 20, 200))
    return _unit(grass * gust * rustle + 0.2 * low * gust), "wind in the grass"


def _syllable(duration: float, f_lo: float, span: float, kind: int) -> np.ndarray:
    """One bird syllable: a Hann-windowed sweep up (kind 0), down (1) or trill (2) in Hz."""
    t = _times(max(8, int(duration * SAMPLE_RATE)))
    x = t / duration
    freq = (f_lo + span * x, f_lo + span * (1.0 - x), f_lo + span * 0.5 * (1.0 + np.sin(2 * np.pi * 25.0 * t)))[kind]
    phase = 2.0 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    return (np.sin(phase) + 0.2 * np.sin(2.0 * phase)) * np.hanning(t.size)


def forest(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
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


def barren(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Low wind in gusts, sometimes a whistle: a nearly silent place."""
    gust = smooth_random(n, rng, 0.2, 0.02, 1.0) ** 2
    y = shaped_noise(n, rng, lambda f: _band(f, 15, 400) * _tilt(f, 1.5)) * gust
    if rng.random() < 0.5:
        fw = rng.uniform(600, 1400)
        whistle = shaped_noise(n, rng, lambda f: _band(f, 0.93 * fw, 1.07 * fw) ** 4)
        y = y + 0.3 * whistle * gust ** 1.5
    return _unit(y), "wind and near-silence"


SIGNATURES = (urban, agriculture, rangeland, forest, water, barren)
"""Signature functions indexed by class id: (n samples, rng) -> (unit-RMS waveform, phrase)."""


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


def soundscape(fractions: np.ndarray, duration: float, rng: np.random.Generator) -> Soundscape:
    """Synthesise ``duration`` seconds of the place whose class fractions are ``fractions`` (6,).

    y = g (sum_c frac_c 10^(L_c/20) a_c s_c + b n + e); see the module docstring.
    """
    n = max(1, int(round(duration * SAMPLE_RATE)))
    mix = np.zeros(n, dtype=np.float64)
    phrases: dict[int, str] = {}
    for c in np.flatnonzero(np.asarray(fractions) >= MIN_AUDIBLE_FRACTION):
        signature, phrase = SIGNATURES[c](n, rng)
        gain_db = CLASS_LEVEL_DB[c] + rng.uniform(-3.0, 3.0)
        mix += fractions[c] * 10.0 ** (gain_db / 20.0) * signature
        phrases[int(c)] = phrase
    mix += 10.0 ** (rng.uniform(-34.0, -22.0) / 20.0) * shaped_noise(n, rng, lambda f: _band(f, 20, 10000) * _tilt(f, 1.0))
    event = None
    if rng.random() < EVENT_PROBABILITY:
        event = list(EVENTS)[int(rng.integers(0, len(EVENTS)))]
        level = rng.uniform(0.3, 1.0) * np.sqrt(np.mean(mix * mix))
        mix += level * _unit(EVENTS[event](n, rng))
    mix *= 10.0 ** (rng.uniform(-26.0, -14.0) / 20.0) / (np.sqrt(np.mean(mix * mix)) + 1e-12) * _loudness(fractions)
    peak = float(np.max(np.abs(mix)))
    if peak > 0.98:
        mix *= 0.98 / peak
    return Soundscape(waveform=mix.astype(np.float32), phrases=phrases, event=event)


def _loudness(fractions: np.ndarray) -> float:
    """Overall level of a place relative to a pure traffic one: sum_c frac_c 10^(L_c/20)."""
    return float(np.sum(np.asarray(fractions) * 10.0 ** (CLASS_LEVEL_DB / 20.0)))
