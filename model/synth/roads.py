"""The latent road network of the synthetic world: where roads run and how busy they are.

Roads are the edges of a Voronoi diagram of feature points, one jittered inside each
``ROAD_CELL_M``-metre lattice cell (:func:`model.synth.noise.cellular_edge`), so they form a
connected net of straight segments about ``ROAD_CELL_M`` apart that crosses every land cover.

- distance to the nearest road ``d`` (metres): the distance to the nearest Voronoi edge;
- a road is drawn (asphalt with a lighter verge) where ``d < ROAD_HALF_WIDTH_M`` (3 m: a 6 m
  carriageway) on every class but water, so a road in the image footprint is visible;
- traffic volume of the road ``v = 0.2 + 0.8 s(n)`` in 0..1, ``n`` a fractal noise of cell
  ``VOLUME_CELL_M`` (busy main roads, quiet lanes), ``s`` the contrast stretch
  ``s(n) = clip(0.5 + 3 (n - 0.5), 0, 1)``;
- what a recorder hears of the road (0..1), a line source falling off 3 dB per doubling of
  distance and inaudible beyond ``AUDIBLE_M`` = 150 m:
  ``h(d) = v clip(1 - log10(max(d, D0) / D0) / log10(AUDIBLE_M / D0), 0, 1)``, ``D0 = 8 m``.
"""
from __future__ import annotations

import numpy as np

from model.synth.noise import cellular_edge, fbm, make_key, value_noise

ROAD_CELL_M = 600.0
ROAD_HALF_WIDTH_M = 3.0
VERGE_M = 1.2
VOLUME_CELL_M = 1500.0
AUDIBLE_M = 150.0
NEAR_M = 8.0
_SALT_ROADS, _SALT_VOLUME = 300, 301


def stretch(n: np.ndarray, gain: float = 3.0) -> np.ndarray:
    """Contrast stretch of a fractal noise (values bunched round 0.5): clip(0.5 + g (n - 0.5), 0, 1)."""
    return np.clip(0.5 + gain * (np.asarray(n) - 0.5), 0.0, 1.0)


def road_distance(seed: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance (metres) from world-local points to the nearest road of world ``seed``."""
    return cellular_edge(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), ROAD_CELL_M,
                         make_key(seed, _SALT_ROADS))


def road_volume(seed: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Traffic volume (0..1) of the roads near world-local points: 0.2 + 0.8 s(n)."""
    n = fbm(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), VOLUME_CELL_M,
            make_key(seed, _SALT_VOLUME), octaves=2)
    return 0.2 + 0.8 * stretch(n)


def heard_traffic(distance: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """What is heard of a road (0..1) at ``distance`` metres: v clip(1 - log(d/D0) / log(150 m/D0), 0, 1)."""
    d = np.maximum(np.asarray(distance, dtype=np.float64), NEAR_M)
    return volume * np.clip(1.0 - np.log10(d / NEAR_M) / np.log10(AUDIBLE_M / NEAR_M), 0.0, 1.0)


def near_road(seed: int, x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a road may be drawn in the bounding box of points (x, y): the distance to the
    nearest road is 1-Lipschitz, so a box whose centre is further from any road than its half
    diagonal plus the road's and verge's width holds none."""
    x0, x1, y0, y1 = float(np.min(x)), float(np.max(x)), float(np.min(y)), float(np.max(y))
    centre = road_distance(seed, np.array([(x0 + x1) / 2.0]), np.array([(y0 + y1) / 2.0]))[0]
    return bool(centre <= 0.5 * np.hypot(x1 - x0, y1 - y0) + ROAD_HALF_WIDTH_M + VERGE_M)


def paint_roads(rgb: np.ndarray, classes: np.ndarray, distance: np.ndarray, x: np.ndarray, y: np.ndarray,
                seed: int) -> np.ndarray:
    """Draw roads over (n, 3) float colours of points (x, y): asphalt where d < ROAD_HALF_WIDTH_M and
    a pale verge VERGE_M wide beside it, both with a 0.8 m grain; water (class 4) is left as it is."""
    verge = np.flatnonzero((classes != 4) & (distance < ROAD_HALF_WIDTH_M + VERGE_M))
    if verge.size == 0:
        return rgb
    grain = value_noise(x[verge], y[verge], 0.8, make_key(seed, _SALT_ROADS + 2))
    asphalt = distance[verge] < ROAD_HALF_WIDTH_M
    colour = np.where(asphalt[:, None], np.array([78.0, 78.0, 84.0]), np.array([150.0, 146.0, 128.0]))
    out = rgb.copy()
    out[verge] = colour * (0.9 + 0.2 * grain)[:, None]
    return out
