"""Latent properties of places: what makes a place sound the way it does, beyond its land cover.

Five seeded, world-wide fields, each in 0..1, evaluated at a recording point ``(x, y)`` (world-local
metres). They read the land cover but are not the land cover: each adds its own fractal noise, and
two of them reach beyond the image footprint. Notation: ``f_c`` the centre-weighted class fractions
(Gaussian, sigma ``SOUND_SIGMA_M`` = 24 m, :meth:`World.centre_fractions`), ``s(n)`` the contrast
stretch ``clip(0.5 + 3 (n - 0.5), 0, 1)`` of a fractal noise ``n`` (:func:`model.synth.roads.stretch`).

- activity ``A = sum_c f_c (b_c + g_c s(n_A))``, ``n_A`` of cell ``ACTIVITY_CELL_M`` (350 m): people,
  work and machines. ``(b_c, g_c)`` in ``ACTIVITY``: urban (0.12, 0.8), so quiet residential
  streets and busy centres both exist; agriculture (0.04, 0.5), some farms busy; forest
  (0.02, 0.45), woods people walk in (parks); rangeland, water, barren lower.
- traffic ``T = 1 - (1 - h(d)) (1 - 0.8 f_urban a_urban^2)``: the heard main road, ``h`` of
  :mod:`model.synth.roads` (distance ``d`` to the nearest road, heard up to 150 m, so also from
  roads out of the image's view), combined with street traffic of the built-up area, which grows
  with the square of its activity ``a_urban = b_urban + g_urban s(n_A)``.
- water nearby ``W = clip(2.5 F_water - 0.1, 0, 1)``, ``F_water`` the water fraction of a wider Gaussian
  window (sigma ``WATER_SIGMA_M`` = 60 m, 6 m steps): a lake 100 m away is heard though not seen.
- vegetation density ``V = sum_c f_c v_c``: forest ``0.72 + 0.28 n_V``; urban
  ``0.06 + 0.6 p`` with parks and gardens ``p = smoothstep(0.5, 0.7, n_P)`` (cell 160 m);
  agriculture ``0.1 + 0.5 p'`` with hedgerows ``p'`` of the same form (cell 220 m); rangeland
  ``0.3 + 0.3 n_V``; water and barren 0.02.
- wind exposure ``X = clip(w (1 - 0.7 V - 0.5 f_urban) + 0.2 W, 0, 1)``, ``w = 0.25 + 0.75 s(n_X)``
  (cell ``WIND_CELL_M`` = 1800 m): open, bare and waterside land is windy, woods and towns sheltered.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.synth.noise import fbm, make_key
from model.synth.roads import heard_traffic, road_distance, road_volume, stretch
from model.synth.world import World

LATENTS = ("activity", "traffic", "water_near", "vegetation", "wind")
ACTIVITY = np.array([(0.12, 0.8), (0.04, 0.5), (0.02, 0.2), (0.02, 0.45), (0.05, 0.2), (0.0, 0.1)])
"""(base b_c, gain g_c) of activity per land-cover class (urban, agriculture, rangeland, forest, water, barren)."""
ACTIVITY_CELL_M = 350.0
WATER_SIGMA_M, WATER_STEP_M = 60.0, 6.0
PARK_CELL_M, HEDGE_CELL_M, VEGETATION_CELL_M = 160.0, 220.0, 90.0
WIND_CELL_M = 1800.0
_URBAN, _AGRI, _RANGE, _FOREST, _WATER = 0, 1, 2, 3, 4
_SALT = {"activity": 400, "park": 401, "hedge": 402, "vegetation": 403, "wind": 404}


@dataclass(frozen=True)
class Latents:
    """The latent fields at n places, each an (n,) float64 array in 0..1 (module doc)."""

    activity: np.ndarray
    traffic: np.ndarray
    water_near: np.ndarray
    vegetation: np.ndarray
    wind: np.ndarray

    def row(self, i: int) -> dict[str, float]:
        """The latents of place ``i`` by name."""
        return {name: float(getattr(self, name)[i]) for name in LATENTS}


def _smoothstep(lo: float, hi: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _noise(world: World, x: np.ndarray, y: np.ndarray, name: str, cell: float) -> np.ndarray:
    return fbm(x, y, cell, make_key(world.seed, _SALT[name]), octaves=3)


def vegetation(world: World, x: np.ndarray, y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """V = sum_c f_c v_c (module doc): woods, parks and gardens, hedgerows, grass."""
    n_v = _noise(world, x, y, "vegetation", VEGETATION_CELL_M)
    parks = _smoothstep(0.5, 0.7, _noise(world, x, y, "park", PARK_CELL_M))
    hedges = _smoothstep(0.5, 0.7, _noise(world, x, y, "hedge", HEDGE_CELL_M))
    per_class = np.stack([0.06 + 0.6 * parks, 0.1 + 0.5 * hedges, 0.3 + 0.3 * n_v, 0.72 + 0.28 * n_v,
                          np.full_like(n_v, 0.02), np.full_like(n_v, 0.02)], axis=1)
    return np.clip((f * per_class).sum(axis=1), 0.0, 1.0)


def place_latents(world: World, x: np.ndarray, y: np.ndarray, fractions: np.ndarray | None = None) -> Latents:
    """The latents at world-local points ``(x, y)`` metres; ``fractions`` (n, 6) are the points'
    centre-weighted class fractions when already known (computed otherwise)."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    f = world.centre_fractions(x, y) if fractions is None else np.atleast_2d(fractions)
    s_a = stretch(_noise(world, x, y, "activity", ACTIVITY_CELL_M))
    per_class = ACTIVITY[None, :, 0] + ACTIVITY[None, :, 1] * s_a[:, None]
    activity = np.clip((f * per_class).sum(axis=1), 0.0, 1.0)
    road = heard_traffic(road_distance(world.seed, x, y), road_volume(world.seed, x, y))
    street = 0.8 * f[:, _URBAN] * per_class[:, _URBAN] ** 2
    traffic = np.clip(1.0 - (1.0 - road) * (1.0 - street), 0.0, 1.0)
    wide = world.centre_fractions(x, y, sigma=WATER_SIGMA_M, step=WATER_STEP_M)[:, _WATER]
    water = np.clip(2.5 * wide - 0.1, 0.0, 1.0)
    veg = vegetation(world, x, y, f)
    gust = 0.25 + 0.75 * stretch(_noise(world, x, y, "wind", WIND_CELL_M))
    wind = np.clip(gust * np.clip(1.0 - 0.7 * veg - 0.5 * f[:, _URBAN], 0.0, 1.0) + 0.2 * water, 0.0, 1.0)
    return Latents(activity=activity, traffic=traffic, water_near=water, vegetation=veg, wind=wind)
