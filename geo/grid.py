"""The tile grid: which source pixels each model tile reads, and the georeferenced cell grid.

Notation (x = columns, y = rows; the same formulas hold for each axis separately):

- ``f = gsd / source_gsd``: source pixels per model pixel as requested (the *resolution factor*;
  f > 1: the input is finer than the model and is downsampled).
- ``step = max(1, round(stride * f))``: source pixels between neighbouring cells (integer, so
  the cell grid is an exact sub-grid of the source pixel grid).
- ``size = max(1, round(tile_size * f))``: source pixels one tile reads (integer); the exact
  scale actually used is ``size / tile_size`` source pixels per model pixel, i.e. an effective
  model GSD of ``source_gsd * size / tile_size`` metres (within half a source pixel per tile of
  the requested ``gsd``).
- Cell ``(row, col)`` covers source pixels ``[col * step, (col + 1) * step)``; its tile is centred
  on it: ``col_off = col * step - (size - step) // 2``. With the default ``stride = tile_size``
  tiles and cells coincide; a smaller stride makes tiles overlap and gives each cell context.
- ``cell_shape = (ceil(height / step_y), ceil(width / step_x))``: cells cover the whole raster;
  tiles reaching past its edges are read with padding, and the padding is marked invalid.
- ``cell_transform = transform @ Affine.scale(step_x, step_y)``: the affine of the cell grid,
  so ``cell_transform @ (0, 0)`` is the source origin and every cell edge is a source pixel edge.
- ``pixel_transform = transform @ Affine.scale(size_x / tile_size, size_y / tile_size)``: the
  grid of model pixels (exact for per-pixel products when ``stride == tile_size``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from affine import Affine
from rasterio.windows import Window

from geo.errors import RasterError

if TYPE_CHECKING:  # pragma: no cover
    from geo.raster import RasterSource

WARN_FACTOR = 4.0  # warn when the input is this many times finer or coarser than the model
MAX_UPSAMPLE = 8.0  # refuse an input more than this many times coarser than the model (--allow-resample)


@dataclass(frozen=True)
class Tile:
    """One tile: its position ``index`` in row-major order, its cell ``row``/``col`` and the
    ``window`` it reads in source pixels (integer offsets and size; may reach outside the raster)."""

    index: int
    row: int
    col: int
    window: Window


class TileGrid:
    """Tiles of ``tile_size`` model pixels at ``gsd`` metres over a ``width`` x ``height`` raster.

    ``source_gsd`` is the raster's (x, y) pixel size in metres (see ``geo.raster.gsd_metres``);
    ``stride`` is the cell spacing in model pixels (default ``tile_size``: no overlap).
    """

    def __init__(self, width: int, height: int, transform: Affine, source_gsd: tuple[float, float],
                 tile_size: int, gsd: float, stride: int | None = None) -> None:
        stride = tile_size if stride is None else stride
        _check_positive(width=width, height=height, tile_size=tile_size, stride=stride,
                        gsd=gsd, source_gsd_x=source_gsd[0], source_gsd_y=source_gsd[1])
        if int(tile_size) != tile_size or int(stride) != stride:
            raise RasterError(f"tile_size and stride must be whole pixels, got {tile_size} and {stride}")
        if stride > tile_size:
            raise RasterError(f"stride ({stride}) larger than tile_size ({tile_size}) would leave gaps")
        self.width, self.height = int(width), int(height)
        self.transform = transform
        self.source_gsd = (float(source_gsd[0]), float(source_gsd[1]))
        self.tile_size, self.gsd, self.stride = int(tile_size), float(gsd), int(stride)
        self.factor = (self.gsd / self.source_gsd[0], self.gsd / self.source_gsd[1])
        self.step = tuple(max(1, round(self.stride * f)) for f in self.factor)
        self.window_size = tuple(max(1, round(self.tile_size * f)) for f in self.factor)
        self.pad = tuple((s - t) // 2 for s, t in zip(self.window_size, self.step))

    @classmethod
    def from_source(cls, src: "RasterSource", tile_size: int, gsd: float,
                    stride: int | None = None) -> "TileGrid":
        """The grid over an open :class:`geo.raster.RasterSource` (uses its size, transform, GSD)."""
        return cls(src.width, src.height, src.transform, src.gsd, tile_size, gsd, stride)

    @property
    def resolution_factor(self) -> float:
        """Requested source pixels per model pixel, ``gsd / source_gsd`` (geometric mean of x and y):
        8.0 means the input is 8x finer than the model, 0.25 that it is 4x coarser."""
        return math.sqrt(self.factor[0] * self.factor[1])

    @property
    def scale(self) -> tuple[float, float]:
        """Exact source pixels per model pixel as read, ``window_size / tile_size`` (x, y)."""
        return (self.window_size[0] / self.tile_size, self.window_size[1] / self.tile_size)

    @property
    def effective_gsd(self) -> tuple[float, float]:
        """Metres per model pixel actually delivered, ``source_gsd * scale`` (x, y)."""
        return (self.source_gsd[0] * self.scale[0], self.source_gsd[1] * self.scale[1])

    @property
    def cell_shape(self) -> tuple[int, int]:
        """(rows, cols) of the cell grid: ``ceil(height / step_y), ceil(width / step_x)``."""
        return (math.ceil(self.height / self.step[1]), math.ceil(self.width / self.step[0]))

    @property
    def cell_transform(self) -> Affine:
        """Affine of the cell grid, ``transform @ scale(step_x, step_y)`` (exact sub-grid)."""
        return self.transform @ Affine.scale(self.step[0], self.step[1])

    @property
    def pixel_transform(self) -> Affine:
        """Affine of the model-pixel grid, ``transform @ scale(size / tile_size)`` per axis."""
        return self.transform @ Affine.scale(*self.scale)

    @property
    def pixel_shape(self) -> tuple[int, int]:
        """(rows, cols) of the model-pixel grid covering the cells (``cell_shape * stride``)."""
        rows, cols = self.cell_shape
        return (rows * self.stride, cols * self.stride)

    def __len__(self) -> int:
        rows, cols = self.cell_shape
        return rows * cols

    def __iter__(self) -> Iterator[Tile]:
        return self.windows()

    def window(self, row: int, col: int) -> Window:
        """Source-pixel window of the tile centred on cell (row, col) (formula in the module doc)."""
        rows, cols = self.cell_shape
        if not (0 <= row < rows and 0 <= col < cols):
            raise IndexError(f"cell ({row}, {col}) outside the {rows} x {cols} cell grid")
        col_off = col * self.step[0] - self.pad[0]
        row_off = row * self.step[1] - self.pad[1]
        return Window(col_off, row_off, self.window_size[0], self.window_size[1])

    def tile(self, index: int) -> Tile:
        """The tile at row-major position ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"tile {index} outside a grid of {len(self)} tiles")
        row, col = divmod(index, self.cell_shape[1])
        return Tile(index, row, col, self.window(row, col))

    def windows(self, start: int = 0) -> Iterator[Tile]:
        """All tiles from row-major position ``start`` on (generator; nothing is read)."""
        for index in range(max(0, start), len(self)):
            yield self.tile(index)

    def chunks(self, size: int, start: int = 0) -> Iterator[list[Tile]]:
        """Tiles in row-major lists of at most ``size`` (e.g. one model batch each)."""
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        chunk: list[Tile] = []
        for tile in self.windows(start):
            chunk.append(tile)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def tile_transform(self, tile: Tile | Window) -> Affine:
        """Affine of one tile's ``tile_size`` x ``tile_size`` model pixels."""
        w = tile.window if isinstance(tile, Tile) else tile
        return self.transform @ Affine.translation(w.col_off, w.row_off) @ Affine.scale(*self.scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for run.json); transforms as [a, b, c, d, e, f]."""
        return {
            "tile_size": self.tile_size, "stride": self.stride, "gsd_m": self.gsd,
            "source_gsd_m": list(self.source_gsd), "effective_gsd_m": list(self.effective_gsd),
            "resolution_factor": self.resolution_factor, "window_size_px": list(self.window_size),
            "cell_step_px": list(self.step), "cell_shape": list(self.cell_shape), "tiles": len(self),
            "cell_transform": list(self.cell_transform)[:6], "pixel_transform": list(self.pixel_transform)[:6],
        }


def resolution_warning(grid: TileGrid, threshold: float = WARN_FACTOR) -> str | None:
    """A one-line warning when the input is ``threshold`` or more times finer or coarser than the
    model (e.g. "input is 8.0x finer than the model's 0.5 m; mapping anyway"), else None."""
    f = grid.resolution_factor
    tolerance = 1e-9
    if f >= threshold * (1 - tolerance):
        return f"input is {f:.1f}x finer than the model's {grid.gsd:g} m; mapping anyway"
    if 1.0 / f >= threshold * (1 - tolerance):
        return f"input is {1.0 / f:.1f}x coarser than the model's {grid.gsd:g} m; mapping anyway"
    return None


def resample_refusal(grid: TileGrid, name: str, limit: float = MAX_UPSAMPLE) -> str | None:
    """The one-line refusal of an input whose pixels are more than ``limit`` times coarser than the
    model's, i.e. ``resolution_factor = gsd / source_gsd < 1 / limit`` (every tile would be
    upsampled more than ``limit`` times), else None. ``name`` starts the line (the file as the
    caller shows it). Finer input (downsampling) is never refused. The one rule of ``geo.map``
    (``--allow-resample`` lifts it) and the app, e.g. "X.tif: its pixels are 300 m, 600x coarser
    than the bundle's 0.5 m; ..."."""
    coarser = 1.0 / grid.resolution_factor
    if coarser <= limit * (1 + 1e-9):
        return None
    return (f"{name}: its pixels are {_pixel_size(grid.source_gsd)}, {_times(coarser)} coarser than the bundle's "
            f"{grid.gsd:g} m; mapping it would upsample every tile (more than {limit:g}x is refused; "
            f"python -m geo.map --allow-resample maps it anyway)")


def _pixel_size(source_gsd: tuple[float, float]) -> str:
    """``source_gsd`` in metres to three significant digits: "300 m", or "30 x 20 m" when not square."""
    x, y = (float(f"{v:.3g}") for v in source_gsd)
    return f"{x:g} m" if x == y else f"{x:g} x {y:g} m"


def _times(factor: float) -> str:
    """A resolution factor as "600x" (100 and more: whole) or "8.1x" (one decimal)."""
    return f"{factor:,.0f}x" if factor >= 100 else f"{factor:.1f}x"


def _check_positive(**values: float) -> None:
    """RasterError naming the first value that is not a finite positive number."""
    for name, value in values.items():
        if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise RasterError(f"{name} must be a positive number, got {value!r}")
