"""The soundscape of a place: how loud each sound source is, given the place's latents, and the mix.

Source amplitudes (RMS, relative to traffic beside a busy road = 1; level in dB = 20 log10 a) from
the latents of :mod:`model.synth.latents` (activity A, traffic T, water nearby W, vegetation V,
wind exposure X), never from the land-cover fractions directly:

==========  =====================================  ==============================================
source      amplitude                              why
==========  =====================================  ==============================================
traffic     ``T``                                  roads in and up to 150 m beyond the view
voices      ``0.8 A``                             people: busy streets, farmyards, parks
machinery   ``0.55 A (1 - V) (1 - 0.5 T)``         engines at work on open land
insects     ``0.5 * 4 V (1 - V) (1 - A) (1 - X/2)``  meadows, fields and hedges, quiet and sheltered
birdsong    ``0.9 V^1.5 (1 - 0.6 T)``              woods, parks, gardens; fewer by busy roads
wind        ``0.5 X``                              open, bare, waterside land
water       ``0.8 W``                              water within about 150 m
==========  =====================================  ==============================================

A recording jitters each amplitude by a uniform +-2 dB, ``a'_s = a_s 10^(u_s/20)``; the loudest
source is its ``dominant`` source. Sources more than 12 dB below the loudest, or below
``MIN_AUDIBLE`` (-24 dB), are not synthesised (the loudest always is). The mix is
``y = g (sum_s a'_s x_s + b n + e)`` with ``x_s`` the unit-RMS signatures of :mod:`model.synth.sounds`,
``n`` pink background noise at ``b`` = -34..-22 dB, ``e`` an optional event (a dog, an aeroplane,
church bells; probability ``EVENT_PROBABILITY``) at 0.3..1 times the mix's RMS, and ``g`` scaling
the mix to an RMS of ``10^(U/20) min(1, sqrt(sum_s a'_s^2))``, ``U`` uniform in -26..-14 dB, so
quiet places stay quiet; the peak is kept below 0.98.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.synth.latents import Latents
from model.synth.sounds import EVENTS, SAMPLE_RATE, SIGNATURES, background, event_sound

SOURCES = tuple(SIGNATURES)
"""Sound-source names, the column order of :func:`source_levels`."""
JITTER_DB = 2.0
RANGE_DB = 12.0
MIN_AUDIBLE = 10.0 ** (-24.0 / 20.0)
EVENT_PROBABILITY = 0.35


@dataclass(frozen=True)
class Soundscape:
    """A synthesised recording: float32 waveform at ``SAMPLE_RATE`` Hz, the phrases of the sources
    heard (loudest first), the incidental event and the loudest (``dominant``) source."""

    waveform: np.ndarray
    phrases: dict[str, str]
    event: str | None
    dominant: str


def source_levels(lat: Latents) -> np.ndarray:
    """Amplitudes (n, len(SOURCES)) of each source at n places (module doc's table)."""
    a, t, v, x = lat.activity, lat.traffic, lat.vegetation, lat.wind
    columns = {
        "traffic": t,
        "voices": 0.8 * a,
        "machinery": 0.55 * a * (1.0 - v) * (1.0 - 0.5 * t),
        "insects": 0.5 * 4.0 * v * (1.0 - v) * (1.0 - a) * (1.0 - 0.5 * x),
        "birdsong": 0.9 * v ** 1.5 * (1.0 - 0.6 * t),
        "wind": 0.5 * x,
        "water": 0.8 * lat.water_near,
    }
    return np.stack([columns[s] for s in SOURCES], axis=1)


def dominant_sources(levels: np.ndarray) -> list[str]:
    """The loudest source of each row of ``levels`` (n, len(SOURCES)) (ties: the first in SOURCES)."""
    return [SOURCES[i] for i in np.argmax(np.atleast_2d(levels), axis=1)]


def jittered(levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One recording's amplitudes: each source's times 10^(u/20), u uniform in +-JITTER_DB."""
    return np.asarray(levels, dtype=np.float64) * 10.0 ** (rng.uniform(-JITTER_DB, JITTER_DB, len(SOURCES)) / 20.0)


def audible(amplitudes: np.ndarray) -> list[int]:
    """Indices of the sources synthesised, loudest first: within RANGE_DB of the loudest and at
    least MIN_AUDIBLE; the loudest always."""
    order = [int(i) for i in np.argsort(-amplitudes, kind="stable")]
    floor = max(MIN_AUDIBLE, amplitudes[order[0]] * 10.0 ** (-RANGE_DB / 20.0))
    return [order[0]] + [i for i in order[1:] if amplitudes[i] >= floor]


def soundscape(levels: np.ndarray, duration: float, rng: np.random.Generator) -> Soundscape:
    """Synthesise ``duration`` seconds of a place whose source amplitudes are ``levels`` (len(SOURCES),).

    y = g (sum_s a'_s x_s + b n + e); see the module docstring.
    """
    n = max(1, round(duration * SAMPLE_RATE))
    amplitudes = jittered(levels, rng)
    mix = np.zeros(n, dtype=np.float64)
    phrases: dict[str, str] = {}
    heard = audible(amplitudes)
    for i in heard:
        signature, phrase = SIGNATURES[SOURCES[i]](n, rng)
        mix += amplitudes[i] * signature
        phrases[SOURCES[i]] = phrase
    mix += 10.0 ** (rng.uniform(-34.0, -22.0) / 20.0) * background(n, rng)
    event = None
    if rng.random() < EVENT_PROBABILITY:
        event = list(EVENTS)[int(rng.integers(0, len(EVENTS)))]
        level = rng.uniform(0.3, 1.0) * np.sqrt(np.mean(mix * mix))
        mix += level * event_sound(event, n, rng)
    loudness = min(1.0, float(np.sqrt(np.sum(amplitudes[heard] ** 2))))
    mix *= 10.0 ** (rng.uniform(-26.0, -14.0) / 20.0) / (np.sqrt(np.mean(mix * mix)) + 1e-12) * loudness
    peak = float(np.max(np.abs(mix)))
    if peak > 0.98:
        mix *= 0.98 / peak
    return Soundscape(waveform=mix.astype(np.float32), phrases=phrases, event=event, dominant=SOURCES[heard[0]])
