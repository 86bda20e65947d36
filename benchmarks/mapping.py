"""Mapping throughput and memory: ``python -m geo.map`` end to end against the backend alone.

    python benchmarks/mapping.py [--size 20000] [--overviews | --raster IN.tif] [--bundle B]
                                 [--backends torch onnx onnx-int8]
                                 [--tile-size 192 --gsd 0.5] [--batch 32] [--workers 2] [--export]

1. Generates a ``size`` x ``size`` px RGB uint8 GeoTIFF at 0.5 m (EPSG:32632; tiled 512 px, ZSTD)
   block row by block row from a repeating procedural pattern (fields, roads, water, noise);
   ``--overviews`` adds internal average overviews, as delivered COG imagery has; ``--raster``
   measures on a given GeoTIFF instead.
2. Uses ``--bundle`` or makes a random-initialised one (resnet18 image encoder, ``--dim``-d
   embeddings, soundscape head and DeepLabV3+ land-cover head, ``--tile-size`` px at ``--gsd`` m).
   ``--export`` runs ``python -m export.onnx --int8`` on it first so the ONNX backends exist.
3. For each backend that opens: **model-only** tiles/s (``geo.pipeline.infer`` on tiles preloaded
   from the raster, after one warm-up batch) and **end-to-end** tiles/s of ``python -m geo.map`` in
   a child process (``pipeline``: the read-infer-write pipeline; ``total``: including COG
   publishing and land-cover vectorisation), with the child's peak RSS (psutil, polled every 50 ms,
   process and its children), and the share of the pipeline's wall time spent in inference.
4. Times ``geo.query.query_embeddings`` on a generated 100,000-cell x 128-d embeddings raster.

Prints a table; ``--json PATH`` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOURCE_GSD = 0.5  # metres per pixel of the generated raster
BLOCK = 512  # px, GeoTIFF block size of the generated raster
PERIOD = 2048  # px, the procedural pattern repeats after this many pixels
OVERVIEWS = [2, 4, 8, 16]  # --overviews: internal overview factors of the generated raster
PALETTE = np.array([[200, 190, 170], [90, 140, 60], [160, 170, 90], [40, 90, 40], [40, 70, 140],
                    [180, 160, 130]], np.uint8)  # urban, agriculture, rangeland, forest, water, barren


def pattern(seed: int = 0) -> np.ndarray:
    """(PERIOD, PERIOD, 3) uint8 scene: 128-px land-cover parcels, two roads, pixel noise."""
    rng = np.random.default_rng(seed)
    parcels = rng.integers(0, len(PALETTE), (PERIOD // 128, PERIOD // 128))
    image = PALETTE[np.kron(parcels, np.ones((128, 128), np.int64))].astype(np.int16)
    image += rng.integers(-12, 13, image.shape, dtype=np.int16)
    image[PERIOD // 3: PERIOD // 3 + 12] = 60
    image[:, PERIOD // 2: PERIOD // 2 + 8] = 60
    return np.clip(image, 0, 255).astype(np.uint8)


def make_raster(path: Path, size: int, overviews: bool = False) -> float:
    """Write the benchmark GeoTIFF block row by block row (with internal average overviews 2, 4, 8,
    16 when ``overviews``, as a cloud-optimised GeoTIFF has them); returns seconds taken."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    start = time.perf_counter()
    tile = pattern()
    cols = np.arange(size) % PERIOD
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32632",
                   transform=Affine(SOURCE_GSD, 0, 690000, 0, -SOURCE_GSD, 5340000), tiled=True,
                   blockxsize=BLOCK, blockysize=BLOCK, compress="zstd", zstd_level=1, photometric="RGB",
                   interleave="pixel", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, size, BLOCK):
            h = min(BLOCK, size - row)
            strip = tile[(row + np.arange(h)) % PERIOD][:, cols]
            ds.write(strip.transpose(2, 0, 1), window=Window(0, row, size, h))
    if overviews:
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews(OVERVIEWS, Resampling.average)
    return time.perf_counter() - start


def random_bundle(path: Path, tile_size: int, gsd: float, dim: int, landcover: bool) -> Path:
    """A random-initialised resnet18 bundle (``model.synth.random_bundle``) with a soundscape head (and a
    land-cover head), its classes coloured with the scene's palette."""
    from model.synth.random_bundle import random_bundle as build

    def coloured(names: list[str]) -> list[dict]:
        return [{"name": n, "color": [int(v) for v in PALETTE[i]]} for i, n in enumerate(names)]

    sounds = coloured(["birds", "traffic", "water", "wind", "voices", "quiet"])
    land = coloured(["urban", "agriculture", "rangeland", "forest", "water", "barren"])
    return build(path, dim=dim, tile_size=tile_size, gsd=gsd, soundscape_classes=sounds, temperature=0.5,
                 landcover_classes=land if landcover else None).path


def preload_tiles(raster: Path, tile_size: int, gsd: float, n: int) -> np.ndarray:
    """The first ``n`` tiles of the raster's grid, read as geo.map reads them."""
    from geo.grid import TileGrid
    from geo.raster import open_raster, read_tiles

    with open_raster(raster) as src:
        grid = TileGrid.from_source(src, tile_size, gsd)
        tiles = [grid.tile(i) for i in range(min(n, len(grid)))]
        rgb, _ = read_tiles(src, tiles, tile_size)
    return rgb


def model_only(backend, tiles: np.ndarray, batch: int, min_seconds: float) -> float:
    """Tiles/s of ``geo.pipeline.infer`` (every head geo.map runs) on preloaded tiles."""
    from geo.pipeline import infer

    infer(backend, tiles[:batch])  # warm-up: graph building, allocator
    done, start = 0, time.perf_counter()
    while True:
        for i in range(0, len(tiles), batch):
            infer(backend, tiles[i:i + batch])
            done += len(tiles[i:i + batch])
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def end_to_end(raster: Path, bundle: Path, backend: str, out: Path, batch: int, workers: int) -> tuple[dict, int]:
    """Run ``python -m geo.map`` in a child; (run.json timings, peak RSS in bytes)."""
    import psutil

    cmd = [sys.executable, "-m", "geo.map", str(raster), "--bundle", str(bundle), "--out", str(out),
           "--backend", backend, "--batch", str(batch), "--workers", str(workers), "--overwrite", "--no-progress"]
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc, peak = psutil.Process(child.pid), [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _tree_rss(proc))
            except psutil.Error:
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    stdout, stderr = child.communicate()
    stop.set()
    watcher.join()
    if child.returncode != 0:
        raise RuntimeError(f"geo.map failed ({child.returncode}): {stderr.strip()[-2000:]}")
    info = json.loads((out / raster.stem / "run.json").read_text())
    return info["timings"], peak[0]


def query_speed(folder: Path, cells: int = 100_000, dim: int = 128, repeats: int = 5) -> float:
    """Best-of seconds for query_embeddings (read + distances + ranks) over ``cells`` x ``dim``."""
    import rasterio
    from affine import Affine

    from geo.query import query_embeddings

    side = math.ceil(math.sqrt(cells))
    path = folder / "embeddings.tif"
    data = np.random.default_rng(0).normal(size=(dim, side, side)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=dim, dtype="float32",
                       crs="EPSG:32632", transform=Affine(96, 0, 0, 0, -96, 0), nodata=float("nan"),
                       tiled=True, blockxsize=64, blockysize=64, interleave="pixel") as ds:
        ds.write(data)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        query_embeddings(path, data[:, 0, 0], "euclidean")
        best = min(best, time.perf_counter() - t0)
    return best


def describe_raster(raster: Path, args: argparse.Namespace) -> str:
    """One line naming the raster measured: the given file, or the generated one's size."""
    if args.raster is not None:
        return str(raster)
    return f"{args.size} x {args.size} px{' with overviews' if args.overviews else ''} at {SOURCE_GSD} m"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="On a CPU-only machine the default 192-px resnet18 bundle maps a 20000 px "
                                       "raster in hours; --tile-size 64 --gsd 6 reads the same raster with 729 tiles.")
    p.add_argument("--size", type=int, default=20000, help="raster side in pixels (default 20000)")
    p.add_argument("--raster", type=Path, default=None,
                   help="measure on this GeoTIFF instead of generating one (--size, --overviews ignored)")
    p.add_argument("--overviews", action="store_true",
                   help="give the raster internal average overviews (2, 4, 8, 16) as a COG has; GDAL then reads "
                        "downsampled tiles from them")
    p.add_argument("--bundle", type=Path, default=None, help="bundle to use (default: a random resnet18 one)")
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"],
                   help="backends to measure; those that do not open are skipped (default: torch onnx onnx-int8)")
    p.add_argument("--tile-size", type=int, default=192, help="tile size of the random bundle (px)")
    p.add_argument("--gsd", type=float, default=0.5, help="GSD of the random bundle (m/px)")
    p.add_argument("--dim", type=int, default=128, help="embedding size of the random bundle")
    p.add_argument("--no-landcover", action="store_true", help="random bundle without land-cover head")
    p.add_argument("--export", action="store_true", help="export the bundle to ONNX (+INT8) first")
    p.add_argument("--batch", type=int, default=32, help="tiles per inference call (32)")
    p.add_argument("--workers", type=int, default=2, help="geo.map reader threads (2)")
    p.add_argument("--preload", type=int, default=128, help="tiles preloaded for the model-only rate")
    p.add_argument("--min-seconds", type=float, default=10.0, help="least time of a model-only measurement")
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temp folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from export.runtime import BackendError, open_backend

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        raster = args.raster or work / f"bench_{args.size}.tif"
        if args.raster is None:
            made = make_raster(raster, args.size, args.overviews)
            print(f"raster {args.size} x {args.size} px{' with overviews' if args.overviews else ''}: written in "
                  f"{made:.1f} s ({raster.stat().st_size / 2**20:.0f} MiB)")
        bundle = args.bundle or random_bundle(work / "bundle", args.tile_size, args.gsd, args.dim, not args.no_landcover)
        if args.export:
            subprocess.run([sys.executable, "-m", "export.onnx", "--bundle", str(bundle), "--int8", "--calibration",
                            str(raster), "--calibration-tiles", "64"], cwd=ROOT, check=True)
        rows = []
        for name in args.backends:
            try:
                backend = open_backend(bundle, name=name, device="cpu" if name.startswith("onnx") else None)
            except (BackendError, ValueError) as e:
                print(f"{name}: skipped ({e})")
                continue
            tiles = preload_tiles(raster, backend.tile_size, backend.bundle.image_input.gsd, args.preload)
            alone = model_only(backend, tiles, args.batch, args.min_seconds)
            del backend
            timings, peak = end_to_end(raster, bundle, name, work / f"out_{name}", args.batch, args.workers)
            pipeline = timings["tiles"] / timings["pipeline_s"]
            rows.append({"backend": name, "tiles": timings["tiles"], "model_only_tiles_per_s": alone,
                         "pipeline_tiles_per_s": pipeline, "total_tiles_per_s": timings["tiles_per_s"],
                         "pipeline_ratio": pipeline / alone, "total_ratio": timings["tiles_per_s"] / alone,
                         "infer_share": timings["infer_s"] / timings["pipeline_s"],
                         "peak_rss_mib": peak / 2**20, "timings": timings})
        query_s = query_speed(work)
    print(f"\nraster {describe_raster(raster, args)}, "
          f"batch {args.batch}, {args.workers} reader threads")
    print(f"{'backend':10s} {'tiles':>6s} {'model-only/s':>12s} {'pipeline/s':>10s} {'ratio':>6s} "
          f"{'total/s':>8s} {'ratio':>6s} {'infer share':>11s} {'peak RSS MiB':>12s}")
    for r in rows:
        print(f"{r['backend']:10s} {r['tiles']:6d} {r['model_only_tiles_per_s']:12.2f} {r['pipeline_tiles_per_s']:10.2f} "
              f"{r['pipeline_ratio']:6.2f} {r['total_tiles_per_s']:8.2f} {r['total_ratio']:6.2f} "
              f"{r['infer_share']:11.1%} {r['peak_rss_mib']:12.0f}")
    print("ratio: end-to-end / model-only tiles/s; infer share: inference seconds / pipeline wall seconds "
          "(1.0 = reading and writing fully hidden behind inference)")
    print(f"query_embeddings, 100,000 cells x 128 dims: {query_s * 1000:.0f} ms (best of 5, read included)")
    if args.json:
        args.json.write_text(json.dumps({"raster": describe_raster(raster, args), "rows": rows, "query_s": query_s}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
