"""Command line of the synthetic world: ``python -m model.synth {pairs,scene,classify,deepglobe,advance}``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from model.core.atomic import staging_dir
from model.core.cli import run_cli
from model.synth.errors import SynthError
from model.synth.world import CLASSES

EPILOG = f"""land-cover classes (ids 0..5, DeepGlobe colours): {', '.join(CLASSES)}.
classify and advance are labelled with twelve land uses (model/synth/land_use.py); pairs' dominant
is the loudest sound source (docs/synthetic_world.md).
Same seed, same world: the scene and the pairs of one seed show the same places.
examples:
  python -m model.synth pairs --out data/synth --samples 1000
  python -m model.synth pairs --out /tmp/tiny --samples 6 --size 128 --duration 3 5
  python -m model.synth scene --out data/scene --size 4096 --gsd 0.5
  python -m model.synth deepglobe --out data/deepglobe --samples 200 --split
"""


def _common(p: argparse.ArgumentParser, samples: bool = True) -> None:
    p.add_argument("--out", required=True, help="output folder (created if missing; must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty output folder (the new one takes its place only once complete)")
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
                   help="least share of the image the land cover under the land use covers (default 0.8)")
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
                   help="least share of the 96 m square around the recorder its land cover covers (default 0.7)")
    _gsd(p)
    _workers(p)
    return parser


def output_folder(out: str | Path, overwrite: bool) -> Path:
    """The output folder, checked: a file there, or a non-empty folder without ``overwrite``, is a
    SynthError (new files over old ones would mix two worlds: a metadata.csv of 3 rows beside 40
    stale images). Missing parents are created."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"{out}: folder is not empty; pass --overwrite to replace it, or choose a new folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SynthError(f"{out.parent}: cannot create folder ({e.strerror or e})") from None
    return out


def write(args: argparse.Namespace, folder: Path) -> int:
    """Write what the parsed command line asks for into ``folder``; returns the number of files
    or items written (for the summary)."""
    from model.synth import downstream, pairs, scene

    progress = not args.quiet
    if args.mode == "pairs":
        pairs.write_pairs(folder, args.samples, args.size, args.seed, tuple(args.duration), args.workers,
                          args.gsd, progress)
    elif args.mode == "scene":
        return len(scene.write_scene(folder, args.size, args.gsd, args.seed, args.cell, progress))
    elif args.mode == "classify":
        downstream.write_classify(folder, args.samples, args.size, args.seed, args.gsd, args.threshold,
                                  args.workers, progress)
    elif args.mode == "deepglobe":
        downstream.write_deepglobe(folder, args.samples, args.size, args.seed, args.split,
                                   args.test_fraction, args.gsd, args.workers, progress)
    else:
        downstream.write_advance(folder, args.samples, args.size, args.seed, args.duration, args.gsd,
                                 args.threshold, args.workers, progress)
    return args.samples


def run(args: argparse.Namespace) -> str:
    """Dispatch a parsed command line; return a one-line summary of what was written.

    Everything is written into a hidden staging folder beside ``--out`` that becomes ``--out`` only
    when complete (:func:`model.core.atomic.staging_dir`): an interrupted or failed run leaves the
    folder as it was, and ``--overwrite`` replaces the old world whole, never file by file."""
    out = output_folder(args.out, args.overwrite)
    with staging_dir(out) as folder:
        count = write(args, folder)
    what = {"pairs": "pairs", "scene": "scene files"}.get(args.mode, f"{args.mode} items")
    return f"wrote {count} {what} to {out}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m model.synth``; bad input raises SynthError (exit 2 through run_cli)."""
    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except KeyboardInterrupt:
        print(f"error: interrupted; {args.out} is left as it was", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
