"""Image-embedding throughput on the CPU: torch eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime INT8.

In one run, side by side (machines of one type differ by up to 2x between sessions; only ratios
from one run mean anything):

- tiles per second of the image encoder at ``--batch`` tiles of ``--tile`` px (normalised float32
  input, the encoder alone), for torch eager fp32, ORT fp32 and ORT INT8, and their ratios to
  torch eager; the engines take turns in every repeat and the median repeat is reported;
- INT8 accuracy vs ORT fp32 on held-out tiles: mean / min embedding cosine, soundscape class
  agreement (a 6-prototype head) and land-cover pixel agreement (DeepLabV3+ head).

The model: a resnet18 bundle (128-d) with random weights, a soundscape head whose 6 prototypes are
k-means centres of the fp32 embeddings of real tiles (so classes are not decided by a single
dominant prototype), and a random-init land-cover decoder; or ``--bundle`` (a trained bundle,
copied, never modified; heads it lacks are added the same way). Tiles are real-looking: cut from
the shared ``RGB.byte.tif`` (Landsat, 300 m pixels) and a synthetic scene made with
``python -m model.synth scene`` (or ``--scene``); ``--calibration-tiles`` of them (random) calibrate INT8, ``--held-out`` others measure accuracy.

    python benchmarks/inference.py [--batch 64] [--repeats 5] [--tile 192] [--bundle B] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.calibration import load_tiles  # noqa: E402
from export.manifest import onnx_name  # noqa: E402
from export.parity import SHARED_DATA, class_agreement, per_sample_cosine  # noqa: E402
from model.core.distance import EUCLIDEAN, pairwise_distance  # noqa: E402

CLASSES = ["urban", "agriculture", "rangeland", "forest", "water", "barren"]
COLOURS = [[0, 255, 255], [255, 255, 0], [255, 0, 255], [0, 255, 0], [0, 0, 255], [255, 255, 255]]


def synthetic_scene(folder: Path, size: int = 1536) -> Path | None:
    """A synthetic scene GeoTIFF made by the project's own generator, or None if it fails."""
    done = subprocess.run([sys.executable, "-m", "model.synth", "scene", "--out", str(folder), "--size", str(size),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True)
    path = folder / "scene.tif"
    return path if done.returncode == 0 and path.is_file() else None


def gather_tiles(tile: int, scene: Path | None) -> tuple[np.ndarray, list[str]]:
    """Real-looking uint8 tiles (overlapping windows, a quarter tile apart) and their sources."""
    sources = [SHARED_DATA / "geotiff" / "RGB.byte.tif"] + ([scene] if scene else [])
    parts = [load_tiles(s, tile, stride=max(1, tile // 4)) for s in sources]
    return np.concatenate(parts), [f"{s.name} ({len(p)} tiles)" for s, p in zip(sources, parts)]


def embed_torch(encoder, x: np.ndarray, batch: int = 32) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([encoder(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def kmeans_prototypes(z: np.ndarray, k: int = 6, seed: int = 0) -> tuple[np.ndarray, float]:
    """k-means centres of embeddings, and a temperature: the median distance to the nearest centre."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(z)
    d = pairwise_distance(z, km.cluster_centers_, EUCLIDEAN).min(axis=1)
    return km.cluster_centers_.astype(np.float32), float(max(np.median(d), 1e-3))


def make_bundle(folder: Path, tile: int, tiles: np.ndarray, given: Path | None) -> Path:
    """The benchmark bundle in ``folder`` (see the module doc)."""
    from model.bundle import load, save
    from model.bundle.image_input import ImageInput
    from model.nn.encoders import image_encoder_from_bundle
    from model.nn.landcover import build_segmenter, landcover_meta, landcover_tensors
    from model.synth.random_bundle import random_bundle
    from model.nn.soundscape_head import soundscape_meta, soundscape_tensors

    classes = [{"name": n, "color": c} for n, c in zip(CLASSES, COLOURS)]
    if given is None:  # random weights, with a random-init land-cover decoder
        given = random_bundle(folder / "random", dim=128, tile_size=tile, audio=False, landcover_classes=classes,
                              provenance={"note": "random weights (benchmarks/inference.py)"}).path
    src = load(given)
    meta, tensors = json.loads(json.dumps(src.meta)), dict(src.tensors)
    image = image_encoder_from_bundle(src)
    if "soundscape" not in meta["heads"]:
        x = ImageInput.from_dict(meta["image_input"]).normalise(tiles)
        protos, temperature = kmeans_prototypes(embed_torch(image, x))
        tensors.update(soundscape_tensors(protos))
        meta["heads"]["soundscape"] = soundscape_meta(classes, temperature, {"prototypes": "k-means of benchmark tiles"})
    spec = meta["image_encoder"]
    if "landcover" not in meta["heads"] and spec["arch"] in ("resnet18", "resnet50"):
        seg = build_segmenter(spec["arch"], len(classes))
        tensors.update(landcover_tensors(seg))
        meta["heads"]["landcover"] = landcover_meta(classes, spec["arch"], meta["image_input"]["tile_size"],
                                                    meta["image_input"]["gsd"])
    return save(folder / "bundle", meta, tensors).path


def write_pngs(tiles: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(tiles):
        Image.fromarray(t).save(folder / f"{i:04d}.png")
    return folder


def throughput(engines: dict, x: np.ndarray, repeats: int) -> dict[str, float]:
    """Median tiles/s over ``repeats`` rounds; in each round every engine runs once, in turn."""
    for run in engines.values():
        run(x[: min(8, len(x))])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, run in engines.items():
            t0 = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - t0)
    return {name: len(x) / statistics.median(ts) for name, ts in times.items()}


def accuracy(bundle_dir: Path, x: np.ndarray) -> dict[str, float]:
    from export.sessions import open_session, run_batched

    out: dict[str, float] = {}
    ref = run_batched(open_session(bundle_dir / onnx_name("image_soundscape")), x, 32)
    got = run_batched(open_session(bundle_dir / onnx_name("image_soundscape", "int8")), x, 32)
    cos = per_sample_cosine(ref[0], got[0])
    out["embedding cosine mean"], out["embedding cosine min"] = float(cos.mean()), float(cos.min())
    out["soundscape class agreement"] = class_agreement(ref[1], got[1])
    out["soundscape classes used (fp32)"] = float(len(np.unique(ref[1].argmax(axis=1))))
    if (bundle_dir / onnx_name("landcover", "int8")).is_file():
        ref_lc = run_batched(open_session(bundle_dir / onnx_name("landcover")), x, 8)[0]
        got_lc = run_batched(open_session(bundle_dir / onnx_name("landcover", "int8")), x, 8)[0]
        out["land-cover pixel agreement"] = class_agreement(ref_lc, got_lc)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64, help="tiles per inference call (default 64)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per engine (default 5)")
    p.add_argument("--tile", type=int, default=192, help="tile size in pixels for a random bundle (default 192)")
    p.add_argument("--bundle", type=Path, help="use this trained bundle (copied) instead of a random one")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for torch and ORT")
    p.add_argument("--scene", type=Path, help="a GeoTIFF to use instead of generating a synthetic scene")
    p.add_argument("--no-scene", action="store_true", help="only the shared RGB.byte.tif tiles")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                   help="torch.onnx exporter, as in python -m export.onnx (default dynamo)")
    p.add_argument("--calibration-tiles", type=int, default=64, help="tiles that calibrate INT8 (default 64)")
    p.add_argument("--held-out", type=int, default=128, help="other tiles for the accuracy figures (default 128)")
    args = p.parse_args()

    import torch

    from export.onnx import export_bundle
    from export.sessions import open_session
    from model.bundle import load
    from model.nn.encoders import image_encoder_from_bundle

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="geoaudio-bench-"))
    try:
        tile = load(args.bundle).image_input.tile_size if args.bundle else args.tile
        scene = None if args.no_scene else (args.scene or synthetic_scene(work / "scene"))
        tiles, sources = gather_tiles(tile, scene)
        order = np.random.default_rng(0).permutation(len(tiles))
        calib = tiles[order[: args.calibration_tiles]]
        held = tiles[order[args.calibration_tiles: args.calibration_tiles + args.held_out]]
        print(f"tiles: {', '.join(sources)}; {len(calib)} calibrate INT8, {len(held)} held out")
        bundle_dir = make_bundle(work, tile, calib, args.bundle)
        t0 = time.perf_counter()
        export_bundle(bundle_dir, graphs=["image_encoder", "image_soundscape", "landcover"], exporter=args.exporter,
                      calibration=write_pngs(calib, work / "calib"), calibration_tiles=len(calib),
                      log=lambda s: None)
        print(f"export + INT8 quantisation: {time.perf_counter() - t0:.0f} s")
        bundle = load(bundle_dir)
        x_all = bundle.image_input.normalise(held)
        x = x_all[np.arange(args.batch) % len(x_all)]
        encoder = image_encoder_from_bundle(bundle)
        sessions = {k: open_session(bundle_dir / f, "cpu", args.threads)
                    for k, f in (("ort fp32", onnx_name("image_encoder")), ("ort int8", onnx_name("image_encoder", "int8")))}

        def torch_eager(b: np.ndarray) -> None:
            with torch.inference_mode():
                encoder(torch.from_numpy(b))

        engines = {"torch eager fp32": torch_eager,
                   **{k: (lambda b, s=s: s.run(None, {"image": b})) for k, s in sessions.items()}}
        rates = throughput(engines, x, args.repeats)
        acc = accuracy(bundle_dir, x_all)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rates["torch eager fp32"]
    print(f"\nload average (1 min) {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
          f"on {os.cpu_count()} CPUs")
    print(f"\nimage encoder {bundle.encoder_spec('image_encoder').arch}, {tile} px tiles, batch {args.batch}, "
          f"{args.threads} threads, median of {args.repeats} ({'given bundle' if args.bundle else 'random weights'})\n")
    print("| engine | tiles/s | vs torch eager |\n| --- | ---: | ---: |")
    for name, r in rates.items():
        print(f"| {name} | {r:.1f} | {r / base:.2f}x |")
    print(f"\nINT8 vs fp32 on {len(held)} held-out tiles\n\n| measure | value |\n| --- | ---: |")
    for name, v in acc.items():
        print(f"| {name} | {v:.4f} |" if "cosine" in name else (f"| {name} | {v:.0f} |" if "used" in name
                                                                 else f"| {name} | {v:.1%} |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
