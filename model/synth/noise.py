"""Procedural lattice noise: hashed integer lattices, value noise, fractal sums and cellular noise.

Everything here is a pure function of world coordinates (metres) and integer salts, so a window of
the world rendered in one piece or in blocks gives the same numbers.

- ``hash_uniform(ix, iy, key)``: a uniform number in [0, 1) for each integer lattice point, from a
  splitmix64 finaliser of ``ix * P1 + mix(iy * P2 + key)`` (64-bit wrap-around arithmetic).
- ``value_noise(x, y, cell, key)``: lattice values every ``cell`` metres, interpolated with the
  smoothstep ``s(t) = t^2 (3 - 2t)``; range [0, 1).
- ``fbm(x, y, cell, key, octaves)``: ``sum_k 0.5^k v(x 2^k / cell)`` normalised back to [0, 1).
- ``value_noise_grid(xs, ys, cell, key)``: the same noise on the grid ``xs x ys``, computed
  separably (rows of lattice values interpolated at each y, then at each x).
- ``cellular(x, y, cell, key, jitter)``: distance (metres) to the nearest feature point, one point
  jittered inside each lattice cell, and a uniform id of that point's cell.
- ``cellular_edge(x, y, cell, key, jitter)``: distance (metres) to the nearest edge of the Voronoi
  diagram of those feature points, ``min_j (|p_j - q|^2 - |p_1 - q|^2) / (2 |p_j - p_1|)`` over
  the other points ``p_j`` (``p_1`` the nearest; the distance from ``q`` to their bisector).
"""
from __future__ import annotations

import numpy as np

_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1
_TABLE_SLACK = 4  # a lattice table may hold up to this many entries per query point


def make_key(seed: int, salt: int) -> int:
    """Combine a world seed and a per-use salt into one 64-bit key."""
    return (int(seed) * 0x100000001B3 + int(salt) * 0x9E3779B1 + 0x632BE59BD9B4E019) & _MASK64


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 in, uint64 out)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def hash_uniform(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Uniform float64 in [0, 1) for integer lattice coordinates ``(ix, iy)`` and a 64-bit key."""
    ux = np.asarray(ix, dtype=np.int64).view(np.uint64)
    uy = np.asarray(iy, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(ux * _P1 + _mix(uy * _P2 + np.uint64(key)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


class LatticeTable:
    """Per-lattice-point values for the bounding box of some query points, looked up by gather.

    Hashing every query point four or nine times is the slow part of lattice noise; when the
    lattice is coarser than the query points, hashing each lattice point of the bounding box
    once and gathering is several times faster. ``pad`` extra lattice points are kept on each side.
    """

    def __init__(self, ix: np.ndarray, iy: np.ndarray, pad: int) -> None:
        self.ix0 = int(ix.min()) - pad
        self.iy0 = int(iy.min()) - pad
        self.nx = int(ix.max()) + pad + 1 - self.ix0
        self.ny = int(iy.max()) + pad + 1 - self.iy0
        gy, gx = np.mgrid[self.iy0:self.iy0 + self.ny, self.ix0:self.ix0 + self.nx]
        self.lx = gx.ravel()
        self.ly = gy.ravel()

    @staticmethod
    def fits(ix: np.ndarray, iy: np.ndarray, pad: int) -> bool:
        """Whether a table for these points stays small compared with the points themselves."""
        if ix.size == 0:
            return False
        span = (int(ix.max()) - int(ix.min()) + 2 * pad + 1) * (int(iy.max()) - int(iy.min()) + 2 * pad + 1)
        return span <= _TABLE_SLACK * ix.size + 4096

    def index(self, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        """Flat table index of lattice points ``(ix, iy)``."""
        return (iy - self.iy0) * self.nx + (ix - self.ix0)


def _lattice_values(
    ix: np.ndarray, iy: np.ndarray, key: int, offsets: list[tuple[int, int]]
) -> list[np.ndarray]:
    """Hashed lattice values at ``(ix + dx, iy + dy)`` for each offset, via a table when it pays."""
    pad = max(max(abs(dx), abs(dy)) for dx, dy in offsets)
    if LatticeTable.fits(ix, iy, pad):
        table = LatticeTable(ix, iy, pad)
        values = hash_uniform(table.lx, table.ly, key)
        k = table.index(ix, iy)
        return [values[k + dy * table.nx + dx] for dx, dy in offsets]
    return [hash_uniform(ix + dx, iy + dy, key) for dx, dy in offsets]


def _split(x: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(x, dtype=np.float64) / cell
    i = np.floor(g)
    return i.astype(np.int64), g - i


def value_noise(x: np.ndarray, y: np.ndarray, cell: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1): lattice every ``cell`` metres, smoothstep interpolation."""
    ix, fx = _split(x, cell)
    iy, fy = _split(y, cell)
    v00, v10, v01, v11 = _lattice_values(ix, iy, key, [(0, 0), (1, 0), (0, 1), (1, 1)])
    sx = fx * fx * (3.0 - 2.0 * fx)
    sy = fy * fy * (3.0 - 2.0 * fy)
    top = v00 + (v10 - v00) * sx
    bottom = v01 + (v11 - v01) * sx
    return top + (bottom - top) * sy


def fbm(x: np.ndarray, y: np.ndarray, cell: float, key: int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of value noise: sum_k 0.5^k v(x, y; cell / 2^k) / sum_k 0.5^k, in [0, 1)."""
    total = np.zeros(np.shape(x), dtype=np.float64)
    norm = 0.0
    for k in range(octaves):
        amp = 0.5 ** k
        total += amp * value_noise(x, y, cell / 2 ** k, (key + 0x51ED27 * (k + 1)) & _MASK64)
        norm += amp
    return total / norm


def _axis_nodes(coords: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice node below each 1-D coordinate and its smoothstep weight s(t) = t^2 (3 - 2t)."""
    i, f = _split(coords, cell)
    return i, f * f * (3.0 - 2.0 * f)


def value_noise_grid(xs: np.ndarray, ys: np.ndarray, cell: float, key: int) -> np.ndarray:
    """``value_noise`` on the grid of 1-D axes ``xs`` (columns) and ``ys`` (rows): (len(ys), len(xs)),
    float32 (within 1e-7 of the pointwise float64 value).

    Bilinear smoothstep interpolation is separable: lattice rows are first interpolated at each
    ``y``, then the (len(ys), nodes) result at each ``x``.
    """
    ix, sx = _axis_nodes(np.asarray(xs, dtype=np.float64), cell)
    iy, sy = _axis_nodes(np.asarray(ys, dtype=np.float64), cell)
    ix0, iy0 = int(ix.min()), int(iy.min())
    gy, gx = np.mgrid[iy0:int(iy.max()) + 2, ix0:int(ix.max()) + 2]
    lattice = hash_uniform(gx, gy, key)
    ky, kx = iy - iy0, ix - ix0
    rows = (lattice[ky] + (lattice[ky + 1] - lattice[ky]) * sy[:, None]).astype(np.float32)
    low = np.take(rows, kx, axis=1)
    out = np.take(rows, kx + 1, axis=1)
    out -= low
    out *= sx.astype(np.float32)[None, :]
    out += low
    return out  # float32: the (H, W) gathers dominate, and half the bytes is twice the speed


def fbm_grid(xs: np.ndarray, ys: np.ndarray, cell: float, key: int, octaves: int = 3) -> np.ndarray:
    """``fbm`` on the grid of 1-D axes ``xs`` and ``ys``: (len(ys), len(xs))."""
    total = np.zeros((np.size(ys), np.size(xs)))
    norm = 0.0
    for k in range(octaves):
        amp = 0.5 ** k
        total += amp * value_noise_grid(xs, ys, cell / 2 ** k, (key + 0x51ED27 * (k + 1)) & _MASK64)
        norm += amp
    return total / norm


def cellular(
    x: np.ndarray, y: np.ndarray, cell: float, key: int, jitter: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """Worley noise: distance in metres to the nearest feature point and that point's uniform id.

    One feature point per ``cell``-metre lattice cell at ``(i + 0.5 + jitter (u - 0.5)) * cell``;
    the nearest of the 3 x 3 neighbouring cells' points is taken.
    """
    ix, fx = _split(x, cell)
    iy, fy = _split(y, cell)
    best = np.full(np.shape(x), np.inf)
    ident = np.zeros(np.shape(x))
    offsets = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    jx = _lattice_values(ix, iy, key, offsets)
    jy = _lattice_values(ix, iy, (key ^ 0xA5A5A5A5) & _MASK64, offsets)
    ids = _lattice_values(ix, iy, (key ^ 0x5A5A5A5A5A) & _MASK64, offsets)
    for (dx, dy), ux, uy, uid in zip(offsets, jx, jy, ids):
        px = dx + 0.5 + jitter * (ux - 0.5) - fx
        py = dy + 0.5 + jitter * (uy - 0.5) - fy
        d2 = px * px + py * py
        closer = d2 < best
        best = np.where(closer, d2, best)
        ident = np.where(closer, uid, ident)
    return np.sqrt(best) * cell, ident



def cellular_edge(x: np.ndarray, y: np.ndarray, cell: float, key: int, jitter: float = 0.8) -> np.ndarray:
    """Distance in metres to the nearest Voronoi edge of ``cellular``'s feature points (same key).

    For the nearest point ``p_1`` and every other point ``p_j`` of the 3 x 3 neighbouring cells, the
    distance from the query ``q`` to their bisector is ``(|p_j - q|^2 - |p_1 - q|^2) / (2 |p_j - p_1|)``
    (lattice units, times ``cell``); the smallest is the distance to the nearest edge.
    """
    ix, fx = _split(x, cell)
    iy, fy = _split(y, cell)
    offsets = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    jx = _lattice_values(ix, iy, key, offsets)
    jy = _lattice_values(ix, iy, (key ^ 0xA5A5A5A5) & _MASK64, offsets)
    px = np.stack([dx + 0.5 + jitter * (ux - 0.5) for (dx, _), ux in zip(offsets, jx)])
    py = np.stack([dy + 0.5 + jitter * (uy - 0.5) for (_, dy), uy in zip(offsets, jy)])
    d2 = (px - fx) ** 2 + (py - fy) ** 2
    nearest = np.argmin(d2, axis=0)
    n1x = np.take_along_axis(px, nearest[None], axis=0)
    n1y = np.take_along_axis(py, nearest[None], axis=0)
    d1 = np.take_along_axis(d2, nearest[None], axis=0)
    gap = np.sqrt((px - n1x) ** 2 + (py - n1y) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = (d2 - d1) / (2.0 * gap)
    edge[gap == 0] = np.inf
    return edge.min(axis=0) * cell
