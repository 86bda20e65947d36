"""The synthetic world: six land-cover classes laid out as one seeded, world-wide class field.

Coordinates are world-local metres: ``x`` east, ``y`` north, from the world's origin, which sits
at a real place in UTM zone 32N (EPSG:32632, around Munich) chosen from the seed. The world is
unbounded; samples are drawn from the square ``[0, extent) x [0, extent)``.

The class field is a warped Voronoi tessellation:

1. domain warp: ``x' = x + A (2 f1(x, y) - 1)``, ``y' = y + A (2 f2(x, y) - 1)`` with ``f1, f2``
   fractal value noise (cell ``warp_size`` m), so region borders wiggle;
2. regions: one seed point jittered inside each ``region_size``-metre lattice cell; a place
   belongs to the region of the nearest seed point (of the 3 x 3 neighbouring cells);
3. region class: drawn at the seed point from ``p_c ∝ prior_c exp(k b_c)`` where ``b_c`` are six
   independent fractal noises of cell ``biome_size`` m (the "biomes") and ``k = BIOME_SHARPNESS``,
   so neighbouring regions tend to share a class and large, mostly single-class areas exist;
4. region look: orientation, texture scale, brightness, tint and a variant number, hashed from
   the region's lattice cell, so every region of a class looks a little different.

The audio of a place is driven by latent fields (:mod:`model.synth.latents`) that read, among
other things, the centre-weighted class fractions around it:
``frac_c(x0, y0) = sum_p w_p [class(p) = c] / sum_p w_p`` with Gaussian weights
``w_p = exp(-|p - (x0, y0)|^2 / (2 sigma^2))``, ``sigma = SOUND_SIGMA_M``, over a square grid of
points every ``FRACTION_STEP_M`` metres out to 3 sigma.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from model.synth.errors import SynthError
from model.synth.noise import LatticeTable, fbm, fbm_grid, hash_uniform, make_key

CLASSES = ["urban", "agriculture", "rangeland", "forest", "water", "barren"]
CLASS_COLOURS = [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
"""DeepGlobe land-cover colours (RGB), indexed by class id."""
UNKNOWN_CLASS = "unknown"
UNKNOWN_COLOUR = (0, 0, 0)
DEEPGLOBE_CLASSES = CLASSES + [UNKNOWN_CLASS]
DEEPGLOBE_COLOURS = CLASS_COLOURS + [UNKNOWN_COLOUR]
N_CLASSES = len(CLASSES)

CRS = "EPSG:32632"
BASE_EASTING = 660_000.0  # m, UTM 32N: south-west of Munich
BASE_NORTHING = 5_310_000.0
ORIGIN_STEP_M = 2_000.0  # the seed moves the origin by whole steps of this many metres
ORIGIN_STEPS = 16

CLASS_PRIOR = np.array([0.19, 0.20, 0.17, 0.20, 0.12, 0.12])
BIOME_SHARPNESS = 9.0
SOUND_SIGMA_M = 24.0
FRACTION_STEP_M = 2.0
_POINTS_PER_BATCH = 1 << 18

_SALT_WARP_X, _SALT_WARP_Y, _SALT_JITTER_X, _SALT_JITTER_Y = 11, 12, 13, 14
_SALT_CLASS, _SALT_BIOME, _SALT_LOOK = 15, 100, 200


def class_id(name: str) -> int:
    """Class id of a class name (0..5); raises SynthError naming the unknown class."""
    try:
        return CLASSES.index(name)
    except ValueError:
        raise SynthError(f"unknown class {name!r}; expected one of {', '.join(CLASSES)}") from None


@dataclass(frozen=True)
class RegionTable:
    """Attributes of the regions (Voronoi cells) touched by a query, one row per region.

    cls: class id; theta: texture orientation (radians); scale: texture scale factor; bright:
    brightness factor; tint: per-channel colour gains (n, 3); variant, ident: uniform [0, 1)
    numbers for palette choice and per-region texture seeds.
    """

    cls: np.ndarray
    theta: np.ndarray
    scale: np.ndarray
    bright: np.ndarray
    tint: np.ndarray
    variant: np.ndarray
    ident: np.ndarray


@dataclass(frozen=True)
class Regions:
    """Which region each query point lies in (``index`` into ``table``), same shape as the query."""

    index: np.ndarray
    table: RegionTable

    @property
    def classes(self) -> np.ndarray:
        """Class id per query point, uint8."""
        return self.table.cls[self.index]


@dataclass(frozen=True)
class World:
    """One seeded world. Sizes in metres: ``region_size`` (Voronoi lattice), ``biome_size``
    (class-preference noise), ``warp_size``/``warp_amplitude`` (border wiggle), ``extent`` (side of
    the square samples are drawn from)."""

    seed: int = 0
    region_size: float = 64.0
    biome_size: float = 900.0
    warp_size: float = 48.0
    warp_amplitude: float = 14.0
    extent: float = 10_000.0

    @cached_property
    def origin(self) -> tuple[float, float]:
        """(easting, northing) in metres, EPSG:32632, of world-local (0, 0); chosen by the seed."""
        u = hash_uniform(np.array([1, 2]), np.array([0, 0]), make_key(self.seed, 1))
        steps = np.floor(u * ORIGIN_STEPS) * ORIGIN_STEP_M
        return BASE_EASTING + float(steps[0]), BASE_NORTHING + float(steps[1])

    @property
    def crs(self) -> str:
        return CRS

    def to_crs(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World-local metres -> (easting, northing) in the world's CRS."""
        e0, n0 = self.origin
        return np.asarray(x, dtype=np.float64) + e0, np.asarray(y, dtype=np.float64) + n0

    def lonlat(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World-local metres -> (longitude, latitude) in degrees, WGS 84."""
        from pyproj import Transformer

        east, north = self.to_crs(x, y)
        transformer = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
        lon, lat = transformer.transform(east, north)
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

    def _key(self, salt: int) -> int:
        return make_key(self.seed, salt)

    def warp(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Domain warp x' = x + A (2 f1 - 1), y' = y + A (2 f2 - 1), A = warp_amplitude metres."""
        a = self.warp_amplitude
        wx = fbm(x, y, self.warp_size, self._key(_SALT_WARP_X), octaves=2)
        wy = fbm(x, y, self.warp_size, self._key(_SALT_WARP_Y), octaves=2)
        return x + a * (2.0 * wx - 1.0), y + a * (2.0 * wy - 1.0)

    def warp_grid(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``warp`` on the grid of 1-D axes ``xs`` (columns) and ``ys`` (rows), computed separably."""
        a = self.warp_amplitude
        wx = fbm_grid(xs, ys, self.warp_size, self._key(_SALT_WARP_X), octaves=2)
        wy = fbm_grid(xs, ys, self.warp_size, self._key(_SALT_WARP_Y), octaves=2)
        gx, gy = np.meshgrid(xs, ys)
        return gx + a * (2.0 * wx - 1.0), gy + a * (2.0 * wy - 1.0)

    def regions(self, x: np.ndarray, y: np.ndarray) -> Regions:
        """The region (and so the class) of each point; ``x, y`` world-local metres, any shape.

        A (H, W) meshgrid (every row of ``x`` equal, every column of ``y`` equal) takes the
        separable fast path for the warp; any other shape is evaluated point by point.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if _is_meshgrid(x, y):
            xw, yw = (a.ravel() for a in self.warp_grid(x[0], y[:, 0]))
        else:
            xw, yw = self.warp(x.ravel(), y.ravel())
        size = self.region_size
        gx, gy = xw / size, yw / size
        ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
        cand = _Candidates(ix, iy)
        lx, ly = cand.lx, cand.ly
        jx = 0.5 + 0.9 * (hash_uniform(lx, ly, self._key(_SALT_JITTER_X)) - 0.5)
        jy = 0.5 + 0.9 * (hash_uniform(lx, ly, self._key(_SALT_JITTER_Y)) - 0.5)
        index = _nearest_seed(gx - ix, gy - iy, jx.astype(np.float32), jy.astype(np.float32), cand)
        px, py = (lx + jx) * size, (ly + jy) * size
        used = np.flatnonzero(np.bincount(index, minlength=lx.size))
        compact = np.zeros(lx.size, dtype=np.int64)
        compact[used] = np.arange(used.size)
        table = self._region_table(lx[used], ly[used], px[used], py[used])
        return Regions(index=compact[index].reshape(x.shape), table=table)

    def _region_table(self, lx: np.ndarray, ly: np.ndarray, px: np.ndarray, py: np.ndarray) -> RegionTable:
        u = [hash_uniform(lx, ly, self._key(_SALT_LOOK + i)) for i in range(8)]
        tint = 1.0 + 0.05 * (np.stack(u[3:6], axis=1) - 0.5) * 2.0
        return RegionTable(
            cls=self._region_classes(lx, ly, px, py),
            theta=u[0] * np.pi,
            scale=0.75 + 0.6 * u[1],
            bright=0.86 + 0.28 * u[2],
            tint=tint,
            variant=u[6],
            ident=u[7],
        )

    def _region_classes(self, lx: np.ndarray, ly: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Class of each region: sample p_c ∝ prior_c exp(k b_c(seed point))."""
        biome = np.stack(
            [fbm(px, py, self.biome_size, self._key(_SALT_BIOME + c), octaves=2) for c in range(N_CLASSES)],
            axis=1,
        )
        logits = BIOME_SHARPNESS * biome + np.log(CLASS_PRIOR)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        u = hash_uniform(lx, ly, self._key(_SALT_CLASS))
        return np.minimum((u[:, None] >= cdf).sum(axis=1), N_CLASSES - 1).astype(np.uint8)

    def classes(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Class id (uint8) at world-local points ``(x, y)`` metres."""
        return self.regions(x, y).classes

    def centre_fractions(
        self, cx: np.ndarray, cy: np.ndarray, sigma: float = SOUND_SIGMA_M, step: float = FRACTION_STEP_M
    ) -> np.ndarray:
        """Gaussian-weighted class fractions around each centre, (n, 6) rows summing to 1.

        frac_c = sum_p w_p [class(p) = c] / sum_p w_p, w_p = exp(-d_p^2 / (2 sigma^2)), points
        every ``step`` metres (default FRACTION_STEP_M) within 3 sigma (a square) of the centre.
        """
        half = int(np.ceil(3.0 * sigma / step))
        offsets = np.arange(-half, half + 1) * step
        ox, oy = np.meshgrid(offsets, offsets)
        weights = np.exp(-(ox ** 2 + oy ** 2) / (2.0 * sigma ** 2)).ravel()
        return self._weighted_fractions(cx, cy, ox.ravel(), oy.ravel(), weights)

    def area_fractions(self, cx: np.ndarray, cy: np.ndarray, side: float, samples: int = 9) -> np.ndarray:
        """Unweighted class fractions of a ``side``-metre square around each centre, (n, 6),
        estimated on a ``samples`` x ``samples`` grid of points."""
        offsets = (np.arange(samples) + 0.5) / samples * side - side / 2.0
        ox, oy = np.meshgrid(offsets, offsets)
        weights = np.ones(ox.size)
        return self._weighted_fractions(cx, cy, ox.ravel(), oy.ravel(), weights)

    def _weighted_fractions(
        self, cx: np.ndarray, cy: np.ndarray, ox: np.ndarray, oy: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        cx = np.atleast_1d(np.asarray(cx, dtype=np.float64))
        cy = np.atleast_1d(np.asarray(cy, dtype=np.float64))
        frac = np.empty((cx.size, N_CLASSES))
        step = max(1, _POINTS_PER_BATCH // ox.size)  # bounded temporaries for many centres
        for i in range(0, cx.size, step):
            cls = self.classes(cx[i:i + step, None] + ox[None, :], cy[i:i + step, None] + oy[None, :])
            for c in range(N_CLASSES):
                frac[i:i + step, c] = ((cls == c) * weights[None, :]).sum(axis=1)
        return frac / frac.sum(axis=1, keepdims=True)


def pixel_grid(x0: float, y0: float, width: int, height: int, gsd: float) -> tuple[np.ndarray, np.ndarray]:
    """World-local coordinates (metres) of pixel centres of a north-up window.

    ``(x0, y0)`` is the window's top-left corner; pixel (row r, col c) has its centre at
    ``x = x0 + (c + 0.5) gsd``, ``y = y0 - (r + 0.5) gsd``. Returns (height, width) arrays.
    """
    xs = x0 + (np.arange(width) + 0.5) * gsd
    ys = y0 - (np.arange(height) + 0.5) * gsd
    return np.meshgrid(xs, ys)


def centred_grid(cx: float, cy: float, size: int, gsd: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre grid of a ``size`` x ``size`` window centred on ``(cx, cy)`` (metres)."""
    half = size * gsd / 2.0
    return pixel_grid(cx - half, cy + half, size, size, gsd)


def _is_meshgrid(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether (x, y) is a 2-D meshgrid: x constant down columns, y constant along rows."""
    return (
        x.ndim == 2 and x.shape == y.shape and x.size > 0
        and bool((x == x[:1]).all()) and bool((y == y[:, :1]).all())
    )


_OFFSETS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


class _Candidates:
    """The lattice cells (lx, ly) that may hold each point's nearest seed: for each point, its
    own cell and the 8 around it (``_OFFSETS``).

    Dense queries use a table of the bounding box: candidate ``j`` of a point is row
    ``corner + shift[j]`` (``corner`` the point's top-left neighbour), so gathers can slice the
    table instead of building nine index arrays. Scattered queries list the distinct cells.
    """

    def __init__(self, ix: np.ndarray, iy: np.ndarray) -> None:
        if LatticeTable.fits(ix, iy, 1):
            table = LatticeTable(ix, iy, 1)
            self.lx, self.ly = table.lx, table.ly
            self.corner = table.index(ix - 1, iy - 1)
            self.shift = [(dy + 1) * table.nx + (dx + 1) for dx, dy in _OFFSETS]
            self.rows = None
        else:
            bias = np.int64(1 << 30)  # cell numbers stay in 0..2^31, so the code fits an int64
            code = np.concatenate([((ix + dx + bias) << np.int64(32)) | (iy + dy + bias) for dx, dy in _OFFSETS])
            unique, inverse = np.unique(code, return_inverse=True)
            self.lx = (unique >> np.int64(32)) - bias
            self.ly = (unique & np.int64(0xFFFFFFFF)) - bias
            self.rows = inverse.reshape(len(_OFFSETS), -1)

    def gather(self, values: np.ndarray, j: int) -> np.ndarray:
        """``values`` (one per cell) at each point's candidate ``j``; a new array."""
        if self.rows is None:
            return values[self.shift[j]:][self.corner]
        return values[self.rows[j]]

    def row(self, winner: np.ndarray) -> np.ndarray:
        """Cell row of each point's candidate number ``winner`` (0..8)."""
        if self.rows is None:
            return self.corner + np.asarray(self.shift)[winner]
        return np.take_along_axis(self.rows, winner[None, :].astype(np.int64), axis=0)[0]


def _nearest_seed(fx: np.ndarray, fy: np.ndarray, jx: np.ndarray, jy: np.ndarray, cand: _Candidates) -> np.ndarray:
    """Cell row of the nearest seed point for each point, computed in lattice units and float32.

    ``fx, fy``: the point's position inside its lattice cell, [0, 1); the seed of the neighbour
    at offset ``(dx, dy)`` lies at ``(dx + jx, dy + jy)`` in the same frame; the squared distance
    ``(dx + jx - fx)^2 + (dy + jy - fy)^2`` is minimised (the first candidate wins ties).
    """
    fx32, fy32 = fx.astype(np.float32), fy.astype(np.float32)
    ax = {d: fx32 - np.float32(d) for d in (-1, 0, 1)}
    ay = {d: fy32 - np.float32(d) for d in (-1, 0, 1)}
    best = np.full(fx.shape, np.inf, dtype=np.float32)
    winner = np.zeros(fx.shape, dtype=np.int8)
    for j, (dx, dy) in enumerate(_OFFSETS):
        d2 = cand.gather(jx, j)
        d2 -= ax[dx]
        d2 *= d2
        e = cand.gather(jy, j)
        e -= ay[dy]
        e *= e
        d2 += e
        closer = d2 < best
        np.minimum(best, d2, out=best)
        winner[closer] = j
    return cand.row(winner)
