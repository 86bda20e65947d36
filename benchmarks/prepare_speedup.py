"""How much faster is reading the prepared image cache than decoding the raw 1024 px tiles?

Generates a SoundingEarth-format folder (``model.synth`` pairs, or a plain stand-in when that
module is unavailable) of 1024 x 1024 px tiles, then iterates SoundingEarthDataset with the
evaluation transform and spectrogram audio twice: once decoding every JPEG, once from the cache
made by ``model.data.prepare`` (192 px of the 0.375 centre crop). Prints samples per second of
both, image-only rates, and their ratios. One thread, as in a DataLoader worker; the fastest of
``--passes`` passes counts.

    python benchmarks/prepare_speedup.py [--pairs 64] [--tile 1024] [--passes 3] [--root DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data import SoundingEarthDataset, prepare_images  # noqa: E402


def write_stand_in(root: Path, n: int, tile: int, seed: int = 0) -> Path:
    """Smooth random RGB tiles and 10-12 s tone spectrograms in the SoundingEarth layout."""
    import pandas as pd
    from PIL import Image

    from model.bundle.audio import logmel_from_waveform, write_spectrogram_jpeg

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "spectrograms").mkdir(exist_ok=True)
    for key in range(n):
        coarse = Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8))
        coarse.resize((tile, tile), Image.BICUBIC).save(root / "images" / f"{key}.jpg", quality=90)
        t = np.arange(int(22050 * rng.uniform(10, 12))) / 22050
        y = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        write_spectrogram_jpeg(logmel_from_waveform(y), root / "spectrograms" / f"{key}.jpg")
    pd.DataFrame({"key": range(n), "longitude": 0.0, "latitude": 0.0}).to_csv(root / "metadata.csv", index=False)
    return root


def generate(root: Path, n: int, tile: int) -> str:
    """Write the pairs; returns which generator made them."""
    try:
        from model.synth.pairs import write_pairs
    except ImportError:
        write_stand_in(root, n, tile)
        return "stand-in writer (model.synth.pairs unavailable)"
    write_pairs(root, n, size=tile, seed=0, duration=(10.0, 12.0))
    return "model.synth.pairs.write_pairs"


def rate(ds: SoundingEarthDataset, passes: int, image_only: bool) -> float:
    """Samples per second over ``passes`` full passes (the fastest pass, after one warm-up sample)."""
    ds[0]
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for i in range(len(ds)):
            if image_only:
                ds.transform(ds.image_region(ds.keys[i]))
            else:
                ds[i]
        best = min(best, time.perf_counter() - start)
    return len(ds) / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64, help="pairs to generate (default 64)")
    parser.add_argument("--tile", type=int, default=1024, help="tile side in px (default 1024)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes; the fastest counts (default 3)")
    parser.add_argument("--root", type=Path, default=None, help="reuse or create the folder here (default: temp)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker, and immune to other load on the machine

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "pairs"
        if not (root / "metadata.csv").is_file():
            start = time.perf_counter()
            source = generate(root, args.pairs, args.tile)
            print(f"generated {args.pairs} pairs at {args.tile} px with {source} in {time.perf_counter() - start:.1f} s")
        common = dict(split="all", audio_source="spectrogram", random_audio_chunk=False)
        raw = SoundingEarthDataset(root, image_cache=False, **common)
        start = time.perf_counter()
        folder = prepare_images(root, size=192, crop=0.375, progress=False)
        print(f"prepared {len(raw)} images into {folder.name} in {time.perf_counter() - start:.2f} s (once)")
        cached = SoundingEarthDataset(root, image_cache=folder, **common)

        rows = [("full sample (image + spectrogram)", False), ("image only", True)]
        print(f"{'':36s}{'raw JPEG':>14s}{'prepared':>14s}{'ratio':>9s}")
        for label, image_only in rows:
            slow, fast = rate(raw, args.passes, image_only), rate(cached, args.passes, image_only)
            print(f"{label:36s}{slow:10.1f} /s {fast:10.1f} /s {fast / slow:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
