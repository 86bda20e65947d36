"""``python -m model.baselines simclr|moco --data DIR --epochs N --out RUN``: image-only baselines.

The command line; the library is :mod:`model.train.baselines`.
"""
from __future__ import annotations

from model.train.threads import prepare_process

prepare_process()  # before anything imports torch: OpenMP threads wait passively (model/train/threads.py)

import argparse
import sys
from model.core.cli import run_cli
from model.data.transforms import EVAL_CROP, TRAIN_CROP
from model.train.baselines import (BaselineConfig, METHODS, run)

def parse_args(argv: list[str] | None = None) -> BaselineConfig:
    p = argparse.ArgumentParser(prog="python -m model.baselines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=METHODS, help="simclr or moco")
    p.add_argument("--data", required=True, help="SoundingEarth-format folder (metadata.csv, images/)")
    p.add_argument("--epochs", type=int, required=True, help="the training budget in epochs")
    p.add_argument("--out", required=True, help="run folder (checkpoints/, logs/, bundle/)")
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32, as model.train.pretrain)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, cosine decay (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--image-size", type=int, default=192, help="view side in px (default 192)")
    p.add_argument("--crop", type=float, default=EVAL_CROP,
                   help="evaluation crop fraction recorded in the bundle (default 0.375, as model.train.pretrain)")
    p.add_argument("--train-crop", type=float, default=TRAIN_CROP,
                   help="centred fraction of each image the views are drawn from (default 0.5)")
    p.add_argument("--gsd", type=float, default=0.0, help="metres per pixel of the encoder input (default: from the data)")
    p.add_argument("--image-mean", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="per-band mean of the encoder input on the 0-1 scale (default ImageNet's)")
    p.add_argument("--image-std", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="per-band standard deviation on the 0-1 scale (default ImageNet's)")
    p.add_argument("--temperature", type=float, default=0.0, help="NT-Xent temperature (default 0.5 simclr, 0.2 moco)")
    p.add_argument("--proj-dim", type=int, default=128, help="projection size (default 128)")
    p.add_argument("--memory-bank", type=int, default=4096, help="moco: keys in the memory bank (default 4096)")
    p.add_argument("--momentum", type=float, default=0.99, help="moco: starting momentum, cosine to 1 (default 0.99)")
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes (default 2)")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda"])
    p.add_argument("--precision", default="auto", help="auto (default), 32-true, bf16-mixed, 16-mixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default 0: torch's default); recorded, since results depend on it")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="safety stop, not a budget: a run cut short by it is recorded as truncated")
    p.add_argument("--limit-train-batches", type=float, default=1.0, help="fraction or number of batches per epoch")
    return BaselineConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0



if __name__ == "__main__":
    sys.exit(run_cli(main))
