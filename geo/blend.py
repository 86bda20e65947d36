"""Land cover per model pixel from overlapping tile predictions, built in row strips.

Output grid: ``rows = cell_rows * stride``, ``cols = cell_cols * stride`` model pixels, with the
affine ``cell_transform @ Affine.scale(1 / stride)`` (so ``stride`` x ``stride`` output pixels make
one tile cell; with ``stride == tile_size`` this is the grid's ``pixel_transform``). The tile of
cell ``(r, c)`` covers output pixels ``[r * stride - p, r * stride - p + T)`` (rows; columns alike)
with ``p = (T - stride) // 2``, i.e. it is centred on its cell.

- ``stride == T`` (:class:`TileMosaic`): tiles do not overlap; a pixel's class is the argmax of its
  tile's probabilities, 255 where the pixel had no valid source data.
- ``stride < T`` (:class:`OverlapBlender`): a pixel's class is ``argmax_k sum_t w_t p_tk / sum_t w_t``
  over the tiles t covering it, with the smooth window ``w(i, j) = (s(i) + eps) (s(j) + eps)``,
  ``s(i) = sin²(π (i + 0.5) / T)``, times the pixel's validity in tile t; 255 where the sum of
  weights is 0. The window damps the tile borders, where a segmenter sees least context; at
  ``stride = T / 2`` the sin² terms of neighbouring tiles sum to 1.

Both take tiles in row-major order (every tile of the grid, ``probs=None`` for tiles skipped as
empty) and return finished strips ``(first_row, uint8 (rows, cols))`` as soon as no later tile can
touch them, so memory is ``O(T * cols * classes)``, never the whole map.

Resuming (see :mod:`geo.journal`): once any tile of cell row ``R`` has been added, output rows
``< finished_rows(R) = max(0, R * stride - pad)`` are final. Output row ``y`` receives tiles of cell
rows ``r`` with ``r * stride - pad <= y < r * stride - pad + T``, so to rebuild rows from
``finished_rows(R)`` on, a mosaic restarted with ``start_row = replay_start(R) = max(0, R - ceil(T /
stride) + 1)`` must be fed again from that cell row; its strips above ``finished_rows(R)`` are
incomplete and must be dropped (:func:`trim_strips`). Without overlap ``replay_start(R) = R``.
"""
from __future__ import annotations

import math

import numpy as np

from geo.grid import Tile

NODATA = 255  # class id of pixels without data
WINDOW_EPS = 1e-3  # keeps tile-border weights above zero, so border pixels of the map get a class

Strip = tuple[int, np.ndarray]


def blend_window(tile_size: int, stride: int) -> np.ndarray:
    """(T, T) float32 weights: all ones when ``stride == tile_size``, else the sin² window above."""
    if stride >= tile_size:
        return np.ones((tile_size, tile_size), np.float32)
    i = np.arange(tile_size, dtype=np.float64)
    s = np.sin(math.pi * (i + 0.5) / tile_size) ** 2 + WINDOW_EPS
    return np.outer(s, s).astype(np.float32)


def class_argmax(probs: np.ndarray) -> np.ndarray:
    """uint8 index of the largest of ``probs`` (K, ...) along axis 0, the first on ties.

    Same result as ``probs.argmax(axis=0)``: ``m = max_k probs[k]``, then for k from K-1 down to
    0 the index becomes k where ``probs[k] == m``. Whole-plane operations on contiguous class planes
    are about 2.5x faster than NumPy's strided argmax over a leading axis (the writer thread's
    main cost per tile).
    """
    best = probs.max(axis=0)
    index = np.full(best.shape, len(probs) - 1, np.uint8)
    for k in range(len(probs) - 2, -1, -1):
        np.putmask(index, probs[k] == best, k)
    return index


def make_mosaic(rows: int, cols: int, tile_size: int, stride: int, n_classes: int,
                start_row: int = 0) -> "TileMosaic | OverlapBlender":
    """The mosaicker for a grid: :class:`TileMosaic` without overlap, else :class:`OverlapBlender`;
    ``start_row`` is the first cell row it will be fed (0, or :func:`replay_start` when resuming)."""
    if stride == tile_size:
        return TileMosaic(rows, cols, tile_size, start_row)
    return OverlapBlender(rows, cols, tile_size, stride, n_classes, start_row)


def finished_rows(rows_done: int, tile_size: int, stride: int) -> int:
    """Output rows that are final once a tile of cell row ``rows_done`` was added: ``R * stride - pad``."""
    return max(0, rows_done * stride - (tile_size - stride) // 2)


def replay_start(rows_done: int, tile_size: int, stride: int) -> int:
    """First cell row to feed again to rebuild the unfinished output rows: ``R - ceil(T / stride) + 1``."""
    return max(0, rows_done - math.ceil(tile_size / stride) + 1)


def trim_strips(strips: list[Strip], first_row: int) -> list[Strip]:
    """The parts of ``strips`` at or below output row ``first_row`` (rows above it are dropped)."""
    kept = []
    for row, strip in strips:
        skip = first_row - row
        if skip <= 0:
            kept.append((row, strip))
        elif skip < len(strip):
            kept.append((first_row, strip[skip:]))
    return kept


def _span(start: int, length: int, limit: int) -> tuple[int, int, int] | None:
    """Clip ``[start, start + length)`` to ``[0, limit)``: (dst0, dst1, src0) or None when empty."""
    d0, d1 = max(start, 0), min(start + length, limit)
    return (d0, d1, d0 - start) if d1 > d0 else None


class TileMosaic:
    """Non-overlapping tiles: one strip of ``T`` output rows per cell row (see module doc)."""

    def __init__(self, rows: int, cols: int, tile_size: int, start_row: int = 0) -> None:
        self.rows, self.cols, self.tile_size = rows, cols, tile_size
        self.row = start_row  # cell row held in the buffer
        self.buffer = np.full((tile_size, cols), NODATA, np.uint8)

    def add(self, tile: Tile, probs: np.ndarray | None, valid: np.ndarray) -> list[Strip]:
        """Place one tile (``probs`` (K, T, T) or None, ``valid`` (T, T)); return finished strips."""
        done = self._advance(tile.row)
        if probs is not None:
            span = _span(tile.col * self.tile_size, self.tile_size, self.cols)
            if span is not None:
                c0, c1, s0 = span
                classes = np.where(valid, class_argmax(probs), NODATA).astype(np.uint8)
                self.buffer[:, c0:c1] = classes[:, s0:s0 + c1 - c0]
        return done

    def _advance(self, row: int) -> list[Strip]:
        done = []
        while self.row < row:
            done.append(self._emit())
        return done

    def _emit(self) -> Strip:
        start = self.row * self.tile_size
        strip = (start, self.buffer[: max(0, min(self.tile_size, self.rows - start))].copy())
        self.buffer.fill(NODATA)
        self.row += 1
        return strip

    def finish(self) -> list[Strip]:
        """The remaining strips down to the last output row."""
        done = []
        while self.row * self.tile_size < self.rows:
            done.append(self._emit())
        return done


class OverlapBlender:
    """Overlapping tiles blended with the smooth window (see module doc)."""

    def __init__(self, rows: int, cols: int, tile_size: int, stride: int, n_classes: int,
                 start_row: int = 0) -> None:
        self.rows, self.cols, self.tile_size, self.stride = rows, cols, tile_size, stride
        self.pad = (tile_size - stride) // 2
        self.window = blend_window(tile_size, stride)
        self.base = start_row * stride - self.pad  # output row held in buffer row 0
        self.acc = np.zeros((n_classes, tile_size, cols), np.float32)
        self.weight = np.zeros((tile_size, cols), np.float32)

    def add(self, tile: Tile, probs: np.ndarray | None, valid: np.ndarray) -> list[Strip]:
        """Accumulate one tile (``probs`` (K, T, T) or None, ``valid`` (T, T)); return finished strips."""
        top = tile.row * self.stride - self.pad
        done = []
        while self.base < top:
            done += self._flush_until(top)
        if probs is not None:
            span = _span(tile.col * self.stride - self.pad, self.tile_size, self.cols)
            if span is not None:
                c0, c1, s0 = span
                r0 = top - self.base
                w = (self.window * valid)[:, s0:s0 + c1 - c0]
                self.acc[:, r0:r0 + self.tile_size, c0:c1] += probs[:, :, s0:s0 + c1 - c0] * w
                self.weight[r0:r0 + self.tile_size, c0:c1] += w
        return done

    def _flush_until(self, row: int) -> list[Strip]:
        """Emit output rows ``[base, row)`` (no later tile reaches them) and shift the buffer."""
        n = min(row - self.base, self.tile_size)
        if n <= 0:
            return []
        classes = np.where(self.weight[:n] > 0, class_argmax(self.acc[:, :n]), NODATA).astype(np.uint8)
        start = self.base
        self.acc[:, :-n] = self.acc[:, n:]
        self.acc[:, -n:] = 0
        self.weight[:-n] = self.weight[n:]
        self.weight[-n:] = 0
        self.base += n
        lo, hi = max(start, 0), min(start + n, self.rows)
        return [(lo, classes[lo - start:hi - start])] if hi > lo else []

    def finish(self) -> list[Strip]:
        """The remaining rows down to the last output row."""
        done = []
        while self.base < self.rows:
            done += self._flush_until(self.base + self.tile_size)
        return done
