"""The ``null`` backend: outputs of the right shapes at almost no cost, for measuring input/output.

``benchmarks/mapping.py`` measures a mapping run's *io-only* rate with it: ``python -m geo.map
--backend null`` reads the same tiles and writes the same products (same grids, files and, since
the classes vary with the tiles, a comparable number of land-cover polygons) as a run with a real
backend, with no model work in between. The ceiling for a real backend on the same machine is then
``bound = 1 / (1 / model_only + 1 / io_only)`` tiles/s (docs/performance.md).

Its outputs mean nothing: per tile, the embedding repeats the tile's mean red, green and blue (0-1)
over ``embedding_dim`` values; the soundscape class is the tile's brightness ``(r + g + b) / 3``
(0-255) in ``K`` equal bins, each land-cover pixel's class the brightness of its ``BLOCK`` x
``BLOCK`` pixel block (blocky, as a segmentation network's output is smooth, not speckled), with
probability 0.9 on that class and the rest spread evenly. Never picked by ``auto``; only by name.
"""
from __future__ import annotations

import numpy as np

from export.runtime import Backend

MAIN_PROBABILITY = 0.9  # probability given to the class of the brightness bin
BLOCK = 8  # model pixels per side of a land-cover block of one class


class NullBackend(Backend):
    """No inference: cheap outputs of the shapes the bundle's heads give (module doc)."""

    name = "null"

    def _detail(self) -> str:
        return "no inference: outputs for measuring reading and writing only"

    def embed_images(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 tiles (N, T, T, 3) -> (N, D): each tile's mean colour (0-1) repeated."""
        tiles = self._checked(tiles, self.tile_size)
        mean = tiles.mean(axis=(1, 2), dtype=np.float32) / 255.0
        return np.resize(mean, (len(tiles), self.embedding_dim)) if len(tiles) else np.zeros((0, self.embedding_dim),
                                                                                                 np.float32)

    def embed_and_score(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (N, D), probabilities (N, K)) with the class of each tile's mean brightness."""
        self._need("soundscape", self.has_soundscape)
        embeddings = self.embed_images(tiles)
        brightness = embeddings[:, :3].mean(axis=1) * 255.0 if len(embeddings) else np.zeros(0, np.float32)
        return embeddings, _one_hot(_bins(brightness, len(self.soundscape_classes)), len(self.soundscape_classes), 1)

    def segment_landcover(self, tiles: np.ndarray) -> np.ndarray:
        """(N, K, S, S) probabilities with each pixel's class the bin of its block's brightness."""
        self._need("landcover", self.has_landcover)
        size = self.landcover_tile_size
        tiles = self._checked(tiles, size)
        k, b = len(self.landcover_classes), BLOCK if size % BLOCK == 0 else 1
        blocks = tiles.reshape(len(tiles), size // b, b, size // b, b, 3).mean(axis=(2, 4, 5), dtype=np.float32)
        ids = np.repeat(np.repeat(_bins(blocks, k), b, axis=1), b, axis=2)
        return _one_hot(ids, k, 1)

    def _checked(self, tiles: np.ndarray, size: int) -> np.ndarray:
        """The tiles after the same shape and dtype check as a real backend (no normalisation)."""
        tiles = np.asarray(tiles)
        self._tiles(tiles[:0], size)
        return tiles


def _bins(brightness: np.ndarray, k: int) -> np.ndarray:
    """Class ids 0..k-1 of brightness 0-255 in ``k`` equal bins."""
    return np.minimum((brightness * k / 256.0).astype(np.int64), k - 1)


def _one_hot(ids: np.ndarray, k: int, axis: int) -> np.ndarray:
    """float32 probabilities with MAIN_PROBABILITY on ``ids`` and the rest spread, class axis at ``axis``."""
    rest = (1.0 - MAIN_PROBABILITY) / max(1, k - 1)
    probs = np.full(ids.shape[:axis] + (k,) + ids.shape[axis:], rest if k > 1 else 1.0, np.float32)
    np.put_along_axis(probs, np.expand_dims(ids, axis), MAIN_PROBABILITY if k > 1 else 1.0, axis=axis)
    return probs
