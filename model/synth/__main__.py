"""Command line of the synthetic world: ``python -m model.synth {pairs,scene,classify,deepglobe,advance}``."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from model.core.cli import run_cli
from model.synth.world import CLASSES

EPILOG = f"""classes (ids 0..5, DeepGlobe colours): {', '.join(CLASSES)}.
Same seed, same world: the scene and the pairs of one seed show the same places.
examples:
  python -m model.synth pairs --out data/synth --samples 1000
  python -m model.synth pairs --out /tmp/tiny --samples 6 --size 128 --duration 3 5
  python -m model.synth scene --out data/scene --size 4096 --gsd 0.5
  python -m model.synth deepglobe --out data/deepglobe --samples 200 --split
"""


def _common(p: argparse.ArgumentParser, samples: bool = True) -> None:
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    if samples:
        p.add_argument("--samples", type=int, required=True, help="number of items to write")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0); same seed -> same output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: one per CPU core for 16 items or more)")


def _gsd(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gsd", type=float, default=0.5, help="ground sample distance, metres per pixel (default 0.5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.synth",
        description="Write a synthetic SoundingEarth world: image/audio pairs, a GeoTIFF scene with "
                    "ground truth, and labelled fine-tuning sets.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")

    def mode(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")

    p = mode("pairs", "SoundingEarth-format pairs: metadata.csv, images, audio, spectrograms, masks")
    _common(p)
    p.add_argument("--size", type=int, default=512, help="image side in pixels, 32..1024 (default 512)")
    p.add_argument("--duration", type=float, nargs=2, default=(10.0, 30.0), metavar=("MIN", "MAX"),
                   help="audio duration range in seconds (default 10 30)")
    _gsd(p)
    _workers(p)

    p = mode("scene", "georeferenced GeoTIFF scene (EPSG:32632) with land-cover and soundscape truth")
    _common(p, samples=False)
    p.add_argument("--size", type=int, default=4096, help="scene side in pixels (default 4096)")
    _gsd(p)
    p.add_argument("--cell", type=float, default=96.0,
                   help="soundscape truth cell side in metres (default 96 = 192 px at 0.5 m)")

    p = mode("classify", "UC Merced-like folder-per-class scene classification set")
    _common(p)
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--threshold", type=float, default=0.8,
                   help="least share of the image the labelled class covers (default 0.8)")
    _gsd(p)
    _workers(p)

    p = mode("deepglobe", "DeepGlobe Land Cover-like segmentation set (colour-coded masks)")
    _common(p)
    p.add_argument("--size", type=int, default=512, help="tile side in pixels (default 512)")
    p.add_argument("--split", action="store_true",
                   help="write training_data/{images,masks} and test_data/{images,masks} instead of train/")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of tiles in test_data with --split (default 0.2)")
    _gsd(p)
    _workers(p)

    p = mode("advance", "ADVANCE-like audio-visual set: vision/<class>/*.jpg, sound/<class>/*.wav")
    _common(p)
    p.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    p.add_argument("--duration", type=float, default=10.0, help="recording length in seconds (default 10)")
    p.add_argument("--threshold", type=float, default=0.7,
                   help="least share of the 96 m square around the recorder the labelled class covers (default 0.7)")
    _gsd(p)
    _workers(p)
    return parser


def run(args: argparse.Namespace) -> str:
    """Dispatch a parsed command line; return a one-line summary of what was written."""
    from model.synth import downstream, pairs, scene

    progress = not args.quiet
    if args.mode == "pairs":
        out = pairs.write_pairs(args.out, args.samples, args.size, args.seed, tuple(args.duration), args.workers,
                                args.gsd, progress)
        return f"wrote {args.samples} pairs to {out}"
    if args.mode == "scene":
        paths = scene.write_scene(args.out, args.size, args.gsd, args.seed, args.cell, progress)
        return "wrote " + ", ".join(str(p) for p in paths.values())
    if args.mode == "classify":
        out = downstream.write_classify(args.out, args.samples, args.size, args.seed, args.gsd, args.threshold,
                                        args.workers, progress)
    elif args.mode == "deepglobe":
        out = downstream.write_deepglobe(args.out, args.samples, args.size, args.seed, args.split,
                                         args.test_fraction, args.gsd, args.workers, progress)
    else:
        out = downstream.write_advance(args.out, args.samples, args.size, args.seed, args.duration, args.gsd,
                                       args.threshold, args.workers, progress)
    return f"wrote {args.samples} {args.mode} items to {out}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model.synth``; bad input raises SynthError (exit 2 through run_cli)."""
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except KeyboardInterrupt:
        print("error: interrupted; completed files are kept, none is half-written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
