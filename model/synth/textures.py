"""Procedural aerial textures of the six classes, as seen from above at sub-metre resolution.

Each texture is a function of world-local metres, so windows and blocks join seamlessly. Lengths
below are on the ground, multiplied by the region's ``scale``; stripes and blocks follow the
region's orientation ``theta`` (rotated frame ``u = x cos t + y sin t``, ``v = -x sin t + y cos t``).

- urban: street blocks of 36 m with 7 m roads, each block four lots with a gabled roof (two
  slopes shaded 0.88 / 1.08) in one of four roof colours, a shadow and a grey-green yard;
- agriculture: field strips 22 m wide of one of five crops, crop rows every 1.4 m, dark tracks;
- rangeland: olive grass with 12 m patches, fine tufts and sparse shrubs;
- forest: tree crowns on a 4.5 m jittered lattice, bright centres falling to dark shadow;
- water: dark blue or teal with 2.5 m waves bent by 20 m noise and sun glints;
- barren: sand or grey gravel with 10 m undulation, 2.2 m ripples and scattered rocks.

The region's brightness and tint multiply the result; the latent road network
(:mod:`model.synth.roads`) is painted over every class but water; values are clipped to 0..255.
The class mask is the class field alone: a road keeps the class of the land it crosses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.synth.noise import cellular, fbm, hash_uniform, make_key, value_noise
from model.synth.roads import near_road, paint_roads, road_distance
from model.synth.world import Regions, World

_SALT_TEXTURE = 1000


@dataclass(frozen=True)
class Patch:
    """The pixels of one class in a window: coordinates (metres) and their regions' attributes."""

    x: np.ndarray
    y: np.ndarray
    cos_t: np.ndarray
    sin_t: np.ndarray
    scale: np.ndarray
    variant: np.ndarray
    key: int

    def rotated(self) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) = the coordinates in the region's rotated frame, metres."""
        u = self.x * self.cos_t + self.y * self.sin_t
        v = -self.x * self.sin_t + self.y * self.cos_t
        return u, v

    def salt(self, k: int) -> int:
        return (self.key + 0x9E37 * k) & ((1 << 64) - 1)


def _rgb(*colour: float) -> np.ndarray:
    return np.array(colour, dtype=np.float64)


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel linear blend of colours: a + (b - a) t, t in [0, 1]; (n, 3)."""
    return a[None, :] + (b - a)[None, :] * t[:, None]


def _pick(palette: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Choose a palette row per pixel from uniform numbers u in [0, 1)."""
    return palette[np.minimum((u * len(palette)).astype(np.int64), len(palette) - 1)]


ROOFS = np.array([(176, 84, 62), (150, 96, 80), (112, 112, 118), (168, 166, 160)], dtype=np.float64)
CROPS = np.array(
    [(206, 182, 96), (104, 146, 62), (152, 116, 82), (150, 176, 92), (222, 202, 70)], dtype=np.float64
)


def urban(p: Patch) -> np.ndarray:
    """Street blocks, roads, gabled roofs with shadows, yards."""
    u, v = p.rotated()
    block = 36.0 * p.scale
    gu, gv = u / block, v / block
    bu, bv = np.floor(gu), np.floor(gv)
    fu, fv = gu - bu, gv - bv
    road_w = 7.0 / block
    road = (fu < road_w) | (fv < road_w)
    lu = (fu - road_w) / (1.0 - road_w) * 2.0
    lv = (fv - road_w) / (1.0 - road_w) * 2.0
    lot_u, lot_v = np.floor(lu), np.floor(lv)
    lu, lv = lu - lot_u, lv - lot_v
    lot_id = hash_uniform((bu * 2 + lot_u).astype(np.int64), (bv * 2 + lot_v).astype(np.int64), p.salt(1))
    margin = 0.10 + 0.12 * lot_id
    inside = (lu > margin) & (lu < 1 - margin) & (lv > margin) & (lv < 1 - margin)
    shade_u, shade_v = lu - 0.08, lv + 0.08
    shadow = ~inside & (shade_u > margin) & (shade_u < 1 - margin) & (shade_v > margin) & (shade_v < 1 - margin)
    grain = value_noise(p.x, p.y, 0.8, p.salt(2))
    roof = _pick(ROOFS, lot_id) * np.where(lv < 0.5, 0.88, 1.08)[:, None]
    yard = _blend(_rgb(112, 122, 98), _rgb(138, 138, 126), grain)
    asphalt = _blend(_rgb(70, 70, 76), _rgb(88, 88, 92), grain)
    out = np.where(inside[:, None], roof, yard)
    out = np.where(shadow[:, None], out * 0.55, out)
    out = np.where(road[:, None], asphalt, out)
    return out * (0.94 + 0.12 * grain)[:, None]


def agriculture(p: Patch) -> np.ndarray:
    """Field strips of different crops with crop rows and dark tracks between strips."""
    u, v = p.rotated()
    width = 22.0 * p.scale
    strip = np.floor(v / width)
    fv = v / width - strip
    crop = hash_uniform(strip.astype(np.int64), np.floor(u / 300.0).astype(np.int64), p.salt(3))
    colour = _pick(CROPS, crop)
    rows = 1.0 + 0.11 * np.sin(2.0 * np.pi * v / (1.4 * p.scale))
    patchy = 0.92 + 0.16 * fbm(p.x, p.y, 9.0, p.salt(4), octaves=2)
    out = colour * (rows * patchy)[:, None]
    track = fv < 0.05
    return np.where(track[:, None], _rgb(118, 104, 82)[None, :], out)


def rangeland(p: Patch) -> np.ndarray:
    """Olive grass with patches, fine tufts and sparse dark shrubs."""
    patches = fbm(p.x, p.y, 12.0 * p.scale, p.salt(5), octaves=2)
    base = _blend(_rgb(118, 138, 70), _rgb(168, 166, 96), patches)
    tufts = 0.9 + 0.2 * value_noise(p.x, p.y, 0.9, p.salt(6))
    dist, ident = cellular(p.x, p.y, 7.0 * p.scale, p.salt(7))
    shrub = (ident < 0.3) & (dist < 1.0 + 1.2 * ident / 0.3)
    out = base * tufts[:, None]
    return np.where(shrub[:, None], _rgb(66, 92, 48)[None, :] * tufts[:, None], out)


def forest(p: Patch) -> np.ndarray:
    """Tree crowns: bright centres, darker edges, deep shadow between crowns."""
    cell = 4.5 * p.scale
    dist, ident = cellular(p.x, p.y, cell, p.salt(8), jitter=0.9)
    radius = 0.55 * cell * (0.8 + 0.4 * ident)
    shade = np.clip(1.0 - (dist / radius) ** 2, 0.0, 1.0) ** 0.6
    conifer = p.variant < 0.4
    crown = np.where(
        conifer[:, None], _blend(_rgb(34, 72, 42), _rgb(52, 92, 50), ident), _blend(_rgb(52, 98, 40), _rgb(82, 120, 50), ident)
    )
    dark = _rgb(16, 36, 18)[None, :]
    return dark + (crown - dark) * shade[:, None]


def water(p: Patch) -> np.ndarray:
    """Dark blue or teal water with bent waves and sparse sun glints."""
    u, _ = p.rotated()
    bend = fbm(p.x, p.y, 20.0, p.salt(9), octaves=2)
    crest = (0.5 + 0.5 * np.sin(2.0 * np.pi * (u / (2.5 * p.scale) + 1.5 * bend))) ** 2
    teal = p.variant < 0.35
    deep = np.where(teal[:, None], _rgb(28, 78, 86)[None, :], _rgb(24, 52, 92)[None, :])
    out = deep + crest[:, None] * 0.6 * _rgb(34, 40, 46)[None, :]
    out = out * (0.85 + 0.3 * bend)[:, None]
    glint = value_noise(p.x, p.y, 0.6, p.salt(10)) > 0.93
    return np.where(glint[:, None], out + 70.0, out)


def barren(p: Patch) -> np.ndarray:
    """Sand or grey gravel with undulation, wind ripples and scattered rocks."""
    u, _ = p.rotated()
    gravel = p.variant < 0.35
    base = np.where(gravel[:, None], _rgb(178, 172, 164)[None, :], _rgb(212, 190, 152)[None, :])
    undulation = 0.88 + 0.24 * fbm(p.x, p.y, 10.0 * p.scale, p.salt(11), octaves=3)
    ripples = 1.0 + 0.05 * np.sin(2.0 * np.pi * u / (2.2 * p.scale))
    out = base * (undulation * ripples)[:, None]
    dist, ident = cellular(p.x, p.y, 5.0 * p.scale, p.salt(12))
    rock = (ident < 0.4) & (dist < 0.6 + 2.0 * ident)
    rock_colour = _rgb(128, 116, 104)[None, :] * (1.15 - 0.3 * dist / (0.6 + 2.0 * ident))[:, None]
    return np.where(rock[:, None], rock_colour, out)


TEXTURES = (urban, agriculture, rangeland, forest, water, barren)
"""Texture functions indexed by class id."""


def render(world: World, x: np.ndarray, y: np.ndarray, regions: Regions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render world-local pixel-centre coordinates (metres, (H, W)) to RGB.

    Returns ``(rgb, classes)``: (H, W, 3) uint8 and the (H, W) uint8 class ids it was drawn from.
    """
    regions = regions if regions is not None else world.regions(x, y)
    table = regions.table
    index = regions.index.ravel()
    classes = table.cls[index]
    flat_x, flat_y = x.ravel(), y.ravel()
    cos_t, sin_t = np.cos(table.theta), np.sin(table.theta)
    out = np.empty((index.size, 3), dtype=np.float64)
    for c, texture in enumerate(TEXTURES):
        sel = np.flatnonzero(classes == c)
        if sel.size == 0:
            continue
        rows = index[sel]
        patch = Patch(
            x=flat_x[sel], y=flat_y[sel], cos_t=cos_t[rows], sin_t=sin_t[rows], scale=table.scale[rows],
            variant=table.variant[rows], key=make_key(world.seed, _SALT_TEXTURE + c),
        )
        look = table.tint[rows] * table.bright[rows, None]
        out[sel] = texture(patch) * look
    if near_road(world.seed, flat_x, flat_y):
        out = paint_roads(out, classes, road_distance(world.seed, flat_x, flat_y), flat_x, flat_y, world.seed)
    rgb = np.clip(out, 0.0, 255.0).astype(np.uint8).reshape(*x.shape, 3)
    return rgb, classes.reshape(x.shape)
