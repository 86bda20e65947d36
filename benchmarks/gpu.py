"""The GPU check: training steps, image-encoder inference and ``geo.map`` on CUDA, in one short run.

Made for the few minutes a GPU machine is lent (``make bench-gpu``; under 5 minutes on one GPU),
and to fit a 64 MiB working tree: it needs torch with CUDA (the lent image has it), this
repository, and for the ``geo.map`` part rasterio (bring its wheel when the image lacks it; that
part is skipped with a line saying so otherwise). It prints one table and writes ``--json``:

1. training step, samples/s, for resnet18/resnet18 and resnet50/resnet18 image/audio encoders
   with the batch-all triplet loss and AdamW, at fp32, bf16 autocast, and bf16 autocast with
   channels-last memory; ``--batch`` pairs of 192 px images and 128 x 128 log-mel chunks, the
   median of ``--repeats`` timed runs of ``--steps`` steps after ``--warmup`` steps;
2. image encoder (the torch backend of a random resnet18 bundle), tiles/s at fp32 and bf16, batch
   64 and 256;
3. ``geo.map`` end to end (read, infer, write every product) against the model alone, tiles/s, on
   a generated 0.5 m GeoTIFF of ``--map-px`` pixels a side with the same bundle.

Budgets are steps and tiles, never minutes. Only ratios within one run compare (``docs/performance.md``).
Without CUDA it prints ``no CUDA: ...`` and exits 0 (so that the script stays working on CPU CI);
``--device cpu --quick`` runs the same code on the CPU at toy sizes (what the test does).

    python benchmarks/gpu.py [--json benchmarks/gpu.json] [--device cuda|cpu] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAIRS = (("resnet18", "resnet18"), ("resnet50", "resnet18"))
MODES = ("fp32", "bf16", "bf16+channels_last")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(run: Callable[[], None], device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``run`` (the device synchronised around each)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_rate(image_arch: str, audio_arch: str, mode: str, device: str, batch: int, size: int,
               steps: int, warmup: int, repeats: int) -> float:
    """Training samples/s of one encoder pair in one precision mode (module doc, part 1)."""
    import torch

    from model.nn.encoders import build_audio_encoder, build_image_encoder
    from model.nn.losses import build_loss

    torch.manual_seed(0)
    image_enc = build_image_encoder(image_arch).to(device)
    audio_enc = build_audio_encoder(audio_arch).to(device)
    loss_fn = build_loss("batch_all_triplet", margin=1.0)
    params = [*image_enc.parameters(), *audio_enc.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4)
    images = torch.randn(batch, 3, size, size, device=device)
    audio = torch.randn(batch, 1, 128, 128, device=device)
    if "channels_last" in mode:
        image_enc, audio_enc = image_enc.to(memory_format=torch.channels_last), audio_enc.to(memory_format=torch.channels_last)
        images, audio = images.to(memory_format=torch.channels_last), audio.to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if "bf16" in mode else None
    device_type = "cuda" if device.startswith("cuda") else "cpu"

    def step() -> None:
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(image_enc(images).float(), audio_enc(audio).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run() -> None:
        for _ in range(steps):
            step()

    for _ in range(warmup):
        step()
    return batch * steps / timed(run, device, repeats)


def encoder_rate(bundle: Any, device: str, precision: str | None, batch: int, batches: int, repeats: int) -> float:
    """Image-encoder tiles/s of the torch backend (module doc, part 2)."""
    import numpy as np

    from export.runtime import open_backend

    backend = open_backend(bundle, "torch", device=device, precision=precision)
    size = bundle.image_input.tile_size
    tiles = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    backend.embed_images(tiles)  # warm-up: kernels chosen, memory allocated

    def run() -> None:
        for _ in range(batches):
            backend.embed_images(tiles)

    return batch * batches / timed(run, device, repeats)


def map_rates(bundle_dir: Path, bundle: Any, device: str, px: int, work: Path) -> dict[str, float] | str:
    """``geo.map`` end to end and the model alone on the same tiles, tiles/s (module doc, part 3);
    a one-line reason instead when rasterio is missing."""
    try:
        import rasterio
        from rasterio.transform import from_origin
    except ImportError:
        return "skipped: rasterio is not installed (bring its wheel for this Python)"
    import numpy as np

    from geo.map import MapOptions, map_files

    raster = work / "scene.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(raster, "w", driver="GTiff", width=px, height=px, count=3, dtype="uint8", crs="EPSG:32632",
                       transform=from_origin(500_000, 5_000_000, bundle.image_input.gsd, bundle.image_input.gsd),
                       tiled=True) as ds:
        ds.write(rng.integers(0, 256, (3, px, px), dtype=np.uint8))
    start = time.perf_counter()
    [result] = map_files([raster], bundle_dir, work / "out", "torch", MapOptions(progress=False))
    total = time.perf_counter() - start
    tiles = (px // bundle.image_input.tile_size) ** 2
    model_only = encoder_rate(bundle, device, None, 64, max(1, tiles // 64), 1)
    return {"map_tiles_per_s": tiles / total, "model_tiles_per_s": model_only, "status": result.status,
            "ratio": tiles / total / model_only}


def sizes(quick: bool) -> dict[str, int]:
    """Batch, image side, steps ... of the full check or of the toy ``--quick`` one."""
    if quick:
        return {"batch": 4, "size": 64, "steps": 1, "warmup": 1, "repeats": 1, "tile": 64, "enc_batches": (8,),
                "enc_repeats": 1, "map_px": 256}
    return {"batch": 64, "size": 192, "steps": 10, "warmup": 3, "repeats": 3, "tile": 192, "enc_batches": (64, 256),
            "enc_repeats": 3, "map_px": 8192}


def run_check(device: str, quick: bool, work: Path) -> dict[str, Any]:
    """Every measurement of the module doc, as one JSON-ready record."""
    import torch

    from model.bundle import load
    from model.synth.random_bundle import random_bundle

    s = sizes(quick)
    record: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
                              "torch": torch.__version__, "quick": quick, "sizes": s, "train": {}, "encoder": {}}
    for image_arch, audio_arch in PAIRS[:1] if quick else PAIRS:
        for mode in MODES:
            rate = train_rate(image_arch, audio_arch, mode, device, s["batch"], s["size"], s["steps"], s["warmup"],
                              s["repeats"])
            record["train"][f"{image_arch}/{audio_arch} {mode}"] = round(rate, 1)
    bundle_dir = work / "bundle"
    random_bundle(bundle_dir, dim=128, tile_size=s["tile"], gsd=0.5, audio=False)
    bundle = load(bundle_dir)
    for precision in (None, "bf16"):
        for batch in s["enc_batches"]:
            rate = encoder_rate(bundle, device, precision, batch, 4 if not quick else 1, s["enc_repeats"])
            record["encoder"][f"{precision or 'fp32'} batch {batch}"] = round(rate, 1)
    record["map"] = map_rates(bundle_dir, bundle, device, s["map_px"], work)
    return record


def table(record: dict[str, Any]) -> str:
    """The record as one plain-text table."""
    lines = [f"GPU check on {record['device']} (torch {record['torch']}{', quick' if record['quick'] else ''})",
             f"{'what':<44} {'per second':>12}"]
    lines += [f"train {k:<38} {v:>12,.1f}" for k, v in record["train"].items()]
    lines += [f"image encoder {k:<30} {v:>12,.1f}" for k, v in record["encoder"].items()]
    if isinstance(record["map"], dict):
        m = record["map"]
        lines += [f"{'geo.map end to end (tiles)':<44} {m['map_tiles_per_s']:>12,.1f}",
                  f"{'model alone (tiles)':<44} {m['model_tiles_per_s']:>12,.1f}",
                  f"{'geo.map / model':<44} {m['ratio']:>12.2f}"]
    else:
        lines.append(f"geo.map: {record['map']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --quick: a dry run of the code)")
    p.add_argument("--quick", action="store_true", help="toy sizes: checks the code, measures nothing useful")
    p.add_argument("--json", type=Path, help="write the record here too")
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA: benchmarks/gpu.py measures the GPU paths and there is no CUDA device here; "
              "nothing measured (run it where a GPU is lent; --device cpu --quick checks the code)")
        return 0
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        record = run_check(args.device, args.quick, Path(tmp))
    print(table(record))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
