"""A place in the world: the image, class mask and centre-weighted class fractions around a point.

Images are north-up windows of ``size`` x ``size`` pixels at ``gsd`` metres per pixel centred on
the place. An optional acquisition jitter imitates different flights: brightness x U(0.92, 1.08),
each channel x N(1, 0.03), plus Gaussian sensor noise of 2 grey levels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.synth.textures import render
from model.synth.world import World, centred_grid

PAIR_GSD = 0.5  # metres per pixel of pair images, as the scene's default


@dataclass(frozen=True)
class Place:
    """x, y: world-local centre (metres); image (H, W, 3) uint8; mask (H, W) uint8 class ids;
    fractions (6,) centre-weighted class fractions that drive the place's audio."""

    x: float
    y: float
    image: np.ndarray
    mask: np.ndarray
    fractions: np.ndarray

    @property
    def land_cover(self) -> int:
        """Class id of the largest centre-weighted fraction."""
        return int(np.argmax(self.fractions))


def render_place(
    world: World, x: float, y: float, size: int, gsd: float = PAIR_GSD, rng: np.random.Generator | None = None
) -> Place:
    """Render the ``size``-pixel window centred on world-local ``(x, y)`` metres.

    With ``rng`` the image gets the acquisition jitter described in the module docstring.
    """
    gx, gy = centred_grid(x, y, size, gsd)
    rgb, mask = render(world, gx, gy)
    if rng is not None:
        rgb = acquisition_jitter(rgb, rng)
    fractions = world.centre_fractions(np.array([x]), np.array([y]))[0]
    return Place(x=float(x), y=float(y), image=rgb, mask=mask, fractions=fractions)


def acquisition_jitter(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """rgb x brightness x channel gains + N(0, 2) noise, clipped to uint8."""
    gains = rng.uniform(0.92, 1.08) * rng.normal(1.0, 0.03, 3)
    noise = rng.standard_normal(rgb.shape, dtype=np.float32) * 2.0
    return np.clip(rgb * gains.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def random_positions(world: World, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` world-local positions (metres), uniform over the world's extent."""
    xy = rng.uniform(0.0, world.extent, (2, count))
    return xy[0], xy[1]
