"""The mapping pipeline: threaded reading, batched inference, a writer thread, bounded queues.

::

    reader threads (K)            main thread (+ inference threads)       writer thread
    own RasterSource each  ──►  reorder by chunk index, cut into   ──►  sink(Batch) in row-major order
    read_tiles(chunk)           batches, backend inference              (products written by windows)

- Each reader opens its own dataset (rasterio/GDAL handles are not thread-safe), takes the next
  chunk of ``READ_BATCHES x batch`` tiles (row-major, :meth:`geo.grid.TileGrid.chunks`) and reads
  it with :func:`geo.tile_read.read_tiles`: one GDAL read per run of tiles in a cell row. GDAL
  releases the GIL while decoding, so reading overlaps inference.
- At most ``2 * workers + 2`` chunks are read ahead of inference (a semaphore), at most
  ``infer_workers`` batches are in inference at once, and at most ``WRITE_QUEUE`` inferred batches
  wait for the writer, so memory is bounded by ``chunks in flight x chunk x tile bytes``, never by
  the raster.
- ``infer_workers > 1`` runs that many inference calls at once in a thread pool (for a backend
  that is itself a pool, e.g. remote inference actors; it must then be thread-safe); results are
  still written in order.
- Tiles with no valid pixel are not inferred (their cells become nodata).
- The first error in any thread stops all threads and is raised in the caller's thread.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np

from geo.errors import RasterError
from geo.grid import Tile, TileGrid
from geo.raster import RasterSource
from geo.scaling import Scaling
from geo.tile_read import read_tiles

WRITE_QUEUE = 4  # inferred batches waiting for the writer
READ_BATCHES = 4  # inference batches per read chunk (one GDAL read per cell row of a chunk)
POLL_S = 0.1  # seconds between checks of the stop flag while waiting


@dataclass
class Batch:
    """One chunk of consecutive tiles after inference.

    ``valid`` (n, T, T) bool per model pixel; ``has_data`` (n,) tiles with any valid pixel; the
    model outputs cover only those m tiles: ``embeddings`` (m, D), ``scores`` (m, K_sound) or None,
    ``landcover`` (m, K_land, T, T) class probabilities or None.
    """

    tiles: list[Tile]
    valid: np.ndarray
    has_data: np.ndarray
    embeddings: np.ndarray
    scores: np.ndarray | None
    landcover: np.ndarray | None

    def select(self, keep: np.ndarray) -> "Batch":
        """The sub-batch of the tiles where the bool mask ``keep`` (n,) is True, in order."""
        keep = np.asarray(keep, bool)
        inferred = keep[self.has_data]  # which of the m model outputs belong to kept tiles

        def rows(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[inferred]

        return Batch([t for t, k in zip(self.tiles, keep) if k], self.valid[keep], self.has_data[keep],
                     self.embeddings[inferred], rows(self.scores), rows(self.landcover))


@dataclass
class Timings:
    """Seconds spent reading (summed over reader threads), in inference (main thread), writing
    (writer thread, then publishing), in the read-infer-write pipeline (wall), and end to end
    (wall, including opening the input and publishing the products); tile counts."""

    read_s: float = 0.0
    infer_s: float = 0.0
    write_s: float = 0.0
    pipeline_s: float = 0.0
    total_s: float = 0.0
    tiles: int = 0
    tiles_with_data: int = 0

    @property
    def tiles_per_s(self) -> float:
        """End-to-end throughput: tiles / total_s."""
        return self.tiles / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict including ``tiles_per_s``."""
        return {"read_s": round(self.read_s, 4), "infer_s": round(self.infer_s, 4),
                "write_s": round(self.write_s, 4), "pipeline_s": round(self.pipeline_s, 4),
                "total_s": round(self.total_s, 4), "tiles": self.tiles,
                "tiles_with_data": self.tiles_with_data, "tiles_per_s": round(self.tiles_per_s, 3)}


def infer(backend: Any, tiles: np.ndarray, landcover: bool = True) -> tuple[np.ndarray, np.ndarray | None,
                                                                           np.ndarray | None]:
    """Run the backend's heads on uint8 tiles (N, T, T, 3): (embeddings (N, D), soundscape scores
    (N, K) or None, land-cover probabilities (N, K, T, T) or None; land cover only when
    ``landcover`` and the backend has the head)."""
    if backend.has_soundscape:
        embeddings, scores = backend.embed_and_score(tiles)
    else:
        embeddings, scores = backend.embed_images(tiles), None
    land = backend.segment_landcover(tiles) if landcover and backend.has_landcover else None
    return embeddings, scores, land


def _empty_outputs(backend: Any, tile_size: int, landcover: bool) -> tuple[np.ndarray, np.ndarray | None,
                                                                          np.ndarray | None]:
    d = backend.embedding_dim
    scores = np.zeros((0, len(backend.soundscape_classes)), np.float32) if backend.has_soundscape else None
    land = (np.zeros((0, len(backend.landcover_classes), tile_size, tile_size), np.float32)
            if landcover and backend.has_landcover else None)
    return np.zeros((0, d), np.float32), scores, land


@dataclass
class _Shared:
    """State shared by the threads of one pipeline run."""

    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    read_s: float = 0.0
    write_s: float = 0.0
    writer_error: BaseException | None = None


_DONE = object()


def _acquire(slots: threading.Semaphore, stop: threading.Event) -> bool:
    while not stop.is_set():
        if slots.acquire(timeout=POLL_S):
            return True
    return False


def _reader(open_source: Callable[[], RasterSource], chunks: Iterator[tuple[int, list[Tile]]],
            tile_size: int, scaling: Scaling, out: queue.Queue, slots: threading.Semaphore, shared: _Shared) -> None:
    """Reader thread: read chunks with its own dataset handle until none are left or stop is set."""
    try:
        with open_source() as src:
            while _acquire(slots, shared.stop):
                with shared.lock:
                    item = next(chunks, None)
                if item is None:
                    slots.release()
                    break
                index, tiles = item
                t0 = time.perf_counter()
                rgb, valid = read_tiles(src, tiles, tile_size, scaling)
                with shared.lock:
                    shared.read_s += time.perf_counter() - t0
                out.put((index, tiles, rgb, valid))
    except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
        out.put(("error", e))
    finally:
        out.put(_DONE)


def _writer(inbox: queue.Queue, sink: Callable[[Batch], None], shared: _Shared) -> None:
    """Writer thread: hand each batch to ``sink`` in order; after an error, only drain the queue."""
    while True:
        batch = inbox.get()
        if batch is None:
            return
        if shared.writer_error is not None:
            continue
        t0 = time.perf_counter()
        try:
            sink(batch)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            shared.writer_error = e
            shared.stop.set()
        shared.write_s += time.perf_counter() - t0


def run_pipeline(open_source: Callable[[], RasterSource], grid: TileGrid, scaling: Scaling, backend: Any,
                 sink: Callable[[Batch], None], batch_size: int = 32, workers: int = 2,
                 progress: Any = None, landcover: bool = True, start: int = 0, infer_workers: int = 1) -> Timings:
    """Map every tile of ``grid`` from row-major position ``start`` on: read with ``workers``
    threads (each calls ``open_source()`` for its own handle), infer ``batch_size`` tiles at a
    time (``infer_workers`` calls at once), pass each :class:`Batch` to ``sink`` in a writer thread,
    in row-major order. ``landcover=False`` skips the backend's land-cover head.

    ``progress`` is an optional tqdm bar advanced by tiles. Returns the :class:`Timings`; the
    first error of any thread is raised here after all threads have stopped.
    """
    if batch_size < 1 or workers < 1 or infer_workers < 1:
        raise RasterError(f"batch size, workers and inference workers must be >= 1, got {batch_size}, "
                          f"{workers} and {infer_workers}")
    began = time.perf_counter()
    shared, timings = _Shared(), Timings()
    chunks = enumerate(grid.chunks(batch_size * READ_BATCHES, start))
    read_q: queue.Queue = queue.Queue()
    write_q: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
    slots = threading.Semaphore(2 * workers + 2)
    readers = [threading.Thread(target=_reader, name=f"geo-read-{i}", daemon=True,
                                args=(open_source, chunks, grid.tile_size, scaling, read_q, slots, shared))
               for i in range(workers)]
    writer = threading.Thread(target=_writer, name="geo-write", daemon=True, args=(write_q, sink, shared))
    for t in readers + [writer]:
        t.start()
    pool = ThreadPoolExecutor(infer_workers, thread_name_prefix="geo-infer") if infer_workers > 1 else None
    try:
        run = partial(_infer_batch, backend, tile_size=grid.tile_size, landcover=landcover)
        inference = _Inference(run, pool, infer_workers, write_q, shared, timings, progress)
        _infer_loop(read_q, slots, workers, batch_size, inference, shared)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        _finish_threads(readers, writer, write_q, shared)
    if shared.writer_error is not None:
        raise shared.writer_error
    timings.read_s, timings.write_s = shared.read_s, shared.write_s
    timings.pipeline_s = timings.total_s = time.perf_counter() - began
    return timings


class _Inference:
    """Runs inference on batches, up to ``limit`` at once in ``pool`` (inline when None), and queues
    the results for the writer in submission order."""

    def __init__(self, run: Callable[..., tuple[Batch, float]], pool: ThreadPoolExecutor | None, limit: int,
                 write_q: queue.Queue, shared: _Shared, timings: Timings, progress: Any) -> None:
        self.run, self.pool, self.limit = run, pool, limit
        self.write_q, self.shared, self.timings, self.progress = write_q, shared, timings, progress
        self.in_flight: deque[Future] = deque()

    def submit(self, tiles: list[Tile], rgb: np.ndarray, valid: np.ndarray) -> None:
        """Infer one batch (or start it in the pool, first handing on the oldest when ``limit`` are busy)."""
        if self.pool is None:
            self._emit(*self.run(tiles, rgb, valid))
            return
        while len(self.in_flight) >= self.limit:
            self._emit(*self.in_flight.popleft().result())
        self.in_flight.append(self.pool.submit(self.run, tiles, rgb, valid))

    def drain(self) -> None:
        """Hand on every batch still in inference, in order."""
        while self.in_flight:
            self._emit(*self.in_flight.popleft().result())

    def _emit(self, batch: Batch, seconds: float) -> None:
        self.timings.infer_s += seconds
        self.timings.tiles += len(batch.tiles)
        self.timings.tiles_with_data += int(batch.has_data.sum())
        _put(self.write_q, batch, self.shared)
        if self.progress is not None:
            self.progress.update(len(batch.tiles))


def _infer_loop(read_q: queue.Queue, slots: threading.Semaphore, workers: int, batch_size: int,
                inference: _Inference, shared: _Shared) -> None:
    """Take read chunks in index order, cut them into batches and hand them to ``inference``."""
    pending: dict[int, tuple[list[Tile], np.ndarray, np.ndarray]] = {}
    next_index, finished = 0, 0
    try:
        while finished < workers or pending:
            item = read_q.get()
            if item is _DONE:
                finished += 1
                continue
            if item[0] == "error":
                raise item[1]
            pending[item[0]] = item[1:]
            while next_index in pending:
                tiles, rgb, valid = pending.pop(next_index)
                slots.release()
                next_index += 1
                for i in range(0, len(tiles), batch_size):
                    inference.submit(tiles[i:i + batch_size], rgb[i:i + batch_size], valid[i:i + batch_size])
            if finished == workers and pending and next_index not in pending:
                raise RuntimeError(f"tile chunk {next_index} was never read")
        inference.drain()
    except BaseException:
        shared.stop.set()
        raise


def _infer_batch(backend: Any, tiles: list[Tile], rgb: np.ndarray, valid: np.ndarray, *, tile_size: int,
                 landcover: bool) -> tuple[Batch, float]:
    """The :class:`Batch` of one batch of tiles and the seconds its inference took."""
    has_data = valid.any(axis=(1, 2))
    t0 = time.perf_counter()
    outputs = (infer(backend, rgb[has_data], landcover) if has_data.any()
               else _empty_outputs(backend, tile_size, landcover))
    return Batch(tiles, valid, has_data, *outputs), time.perf_counter() - t0


def _put(write_q: queue.Queue, batch: Batch, shared: _Shared) -> None:
    """Queue a batch for the writer, waiting while the queue is full; raise the writer's error."""
    while True:
        if shared.writer_error is not None:
            raise shared.writer_error
        try:
            write_q.put(batch, timeout=POLL_S)
            return
        except queue.Full:
            continue


def _finish_threads(readers: list[threading.Thread], writer: threading.Thread, write_q: queue.Queue,
                    shared: _Shared) -> None:
    """Stop the readers (after an error), let the writer drain and end, join everything."""
    for t in readers:
        t.join()
    while True:
        try:
            write_q.put(None, timeout=POLL_S)
            break
        except queue.Full:
            if not writer.is_alive():
                break
    writer.join()
