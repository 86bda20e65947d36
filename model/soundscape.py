"""Fit a bundle's soundscape head from audio metadata: ``python -m model.soundscape --bundle B --data DIR``.

The command line; the library is :mod:`model.heads.soundscape`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from model.core.cli import fail, run_cli
from model.data.sound_classes import load_classes
from model.heads.soundscape import (class_counts, fit_soundscape, format_counts, format_report, label_pairs)

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.soundscape",
        description="Fit a bundle's soundscape head: sound classes from audio metadata, one prototype per "
                    "class from training recordings' audio embeddings, a temperature fitted on validation "
                    "pairs; prints the report (accuracy of image -> class next to the class-frequency "
                    "baseline) and stores the head in the bundle.")
    p.add_argument("--bundle", required=True, type=Path, help="model bundle folder (image and audio encoders)")
    p.add_argument("--data", required=True, type=Path, help="SoundingEarth-format folder with metadata.csv")
    p.add_argument("--classes", type=Path, default=None,
                   help="YAML class file (default: the synthetic world's six signatures when the metadata "
                        "has synthetic 'dominant' classes, else the shipped keyword rules "
                        "model/data/sound_classes.yaml)")
    p.add_argument("--audio-source", default="spectrogram", choices=("spectrogram", "audio"),
                   help="embed spectrograms/{key}.jpg (default) or decode audio/{key}.mp3")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per batch (default 16)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for the encoders (default cpu)")
    p.add_argument("--counts-only", action="store_true",
                   help="only print how many recordings each class gets (to tune a class file); write nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from model.bundle import load

    args = parse_args(argv)
    if args.batch_size < 1 or args.workers < 0:
        fail("--batch-size must be positive and --workers not negative")
    bundle = load(args.bundle)
    classes = load_classes(args.classes) if args.classes else None
    if args.counts_only:
        pairs, classes = label_pairs(bundle, args.data, classes, args.audio_source)
        print(f"classes from {classes.source}: {len(pairs.keys)} recordings with a class, "
              f"{pairs.unassigned} matched no class")
        print("\n".join(format_counts({"counts": class_counts(pairs, classes)})))
        return 0
    bundle, report = fit_soundscape(bundle, args.data, classes, args.audio_source, args.batch_size,
                                    args.workers, args.device)
    print(format_report(report, bundle.heads["soundscape"]["temperature"]))
    print(f"wrote the soundscape head to {bundle.path}")
    return 0



if __name__ == "__main__":
    sys.exit(run_cli(main))
