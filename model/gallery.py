"""The audio gallery: every recording of a SoundingEarth-format folder, embedded once, in the bundle.

The command line; the library is :mod:`model.heads.gallery`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from model.core.cli import fail, run_cli
from model.bundle.gallery import audio_encoder_hash
from model.heads.gallery import build_gallery

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.gallery",
        description="Embed every recording of a SoundingEarth-format folder once with a bundle's audio "
                    "encoder and store them in BUNDLE/gallery.parquet (key, location, title, description, "
                    "dominant class, audio path, embedding). Reruns embed only what is missing.")
    p.add_argument("--bundle", required=True, type=Path, help="model bundle folder (needs an audio encoder)")
    p.add_argument("--data", required=True, type=Path, help="SoundingEarth-format folder with metadata.csv")
    p.add_argument("--split", default="all", choices=("train", "val", "test", "all"),
                   help="which recordings (key mod 10 split; default: all)")
    p.add_argument("--audio-source", default="spectrogram", choices=("spectrogram", "audio"),
                   help="embed spectrograms/{key}.jpg (default) or decode audio/{key}.mp3")
    p.add_argument("--batch-size", type=int, default=16, help="recordings per batch (default 16)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for the encoder, e.g. cpu or cuda (default cpu)")
    p.add_argument("--save-every", type=int, default=2048,
                   help="write progress after this many new recordings (default 2048)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from model.bundle import load

    args = parse_args(argv)
    if args.batch_size < 1 or args.workers < 0 or args.save_every < 1:
        fail("--batch-size and --save-every must be positive and --workers not negative")
    bundle = load(args.bundle)
    audio_encoder_hash(bundle)  # fails early for bundles without an audio encoder
    update = build_gallery(bundle, args.data, args.split, args.audio_source, args.batch_size,
                           args.workers, args.device, save_every=args.save_every)
    if update.reason and update.embedded:
        print(update.reason)
    state = "wrote" if update.written else "unchanged:"
    print(f"{state} {update.path}: {update.total} recordings (embedded {update.embedded} new, kept "
          f"{update.kept}, dropped {update.dropped} no longer in {args.data})")
    return 0



if __name__ == "__main__":
    sys.exit(run_cli(main))
