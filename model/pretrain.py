"""``python -m model.pretrain``: audiovisual pretraining on a SoundingEarth-format folder.

The command line; the library is :mod:`model.train.pretrain`.

``--preset reference`` trains as the SoundingEarth reference code did (Adam 1e-3 constant, no
weight decay, batch 256, 300 epochs, its batch-all triplet loss, its augmentation, the published
widths stem 32 and 64/182/256/512, its head initialisation, the last epoch's weights); ``--preset
ours`` (the default) keeps our defaults. Options given in a --config file or as flags override the
preset's; config.yaml and the bundle's provenance record the preset and every value used.

On several machines, every node runs the same command with ``--num-nodes M`` and its own
``NODE_RANK`` (docs/scale.md):

    MASTER_ADDR=<node 0> MASTER_PORT=29500 NODE_RANK=<i> python -m model.pretrain ... --devices N --num-nodes M
"""
from __future__ import annotations

from model.train.threads import prepare_process

prepare_process()  # before anything imports torch: OpenMP threads wait passively (model/train/threads.py)

import argparse
import sys
from model.core.cli import run_cli
from model.train.pretrain import (AUGMENTATIONS, BUNDLE_FROM, HEAD_INITS, LOSS_NAMES, OPTIMIZERS, PRESETS,
                                  SCHEDULES, PretrainConfig, read_config_file, resolve_config, run)

def parse_args(argv: list[str] | None = None) -> PretrainConfig:
    p = argparse.ArgumentParser(prog="python -m model.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with any of the options below (flags override it)")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="where unset options come from: ours (default) or reference (the SoundingEarth code's "
                        "pretraining; model/train/pretrain.py REFERENCE_PRETRAIN)")
    p.add_argument("--data", help="SoundingEarth-format folder (metadata.csv, images/, audio/ or spectrograms/)")
    p.add_argument("--out", help="run folder (default runs/pretrain)")
    p.add_argument("--image-arch", choices=["resnet18", "resnet50"])
    p.add_argument("--audio-arch", choices=["resnet18", "resnet50"])
    p.add_argument("--embed-dim", type=int, help="embedding size D (default 128)")
    p.add_argument("--stem-width", type=int, help="stem channels of both encoders (default: the arch's, 64; "
                                                  "the published checkpoints: 32)")
    p.add_argument("--widths", type=int, nargs=4, metavar=("W1", "W2", "W3", "W4"),
                   help="stage planes of both encoders (default: the arch's, 64 128 256 512; published: 64 182 256 512)")
    p.add_argument("--head-init", choices=list(HEAD_INITS),
                   help="fc initialisation: ours (torch's Linear default) or reference (Kaiming normal, fan out)")
    p.add_argument("--loss", choices=list(LOSS_NAMES),
                   help="batch_all_triplet (default), naive_triplet, contrastive, or batch_all_reference (the "
                        "reference code's TripletLoss: the batch-all mean over all N x N terms, diagonal included)")
    p.add_argument("--margin", type=float, help="triplet margin (default 1.0)")
    p.add_argument("--tau", type=float, help="contrastive temperature (default 0.2)")
    p.add_argument("--batch-size", type=int, help="pairs per step and device (default 32)")
    p.add_argument("--epochs", type=int, help="the training budget in epochs (default 10)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, help="default 1e-4 (reference: 0)")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), help="adamw (default) or adam (reference)")
    p.add_argument("--schedule", choices=list(SCHEDULES),
                   help="learning-rate schedule: cosine decay over the epochs (default) or constant (reference)")
    p.add_argument("--image-size", type=int, help="encoder input in pixels (default 192)")
    p.add_argument("--crop", type=float, help="centre crop as a fraction of the image side (default 0.375 = 384/1024)")
    p.add_argument("--gsd", type=float, help="metres per pixel of the encoder input (default: from the data)")
    p.add_argument("--image-mean", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="per-band mean of the encoder input on the 0-1 scale (default ImageNet's)")
    p.add_argument("--image-std", type=float, nargs=3, metavar=("R", "G", "B"),
                   help="per-band standard deviation on the 0-1 scale (default ImageNet's)")
    p.add_argument("--audio-source", choices=["spectrogram", "audio"], help="spectrogram JPEGs or raw audio")
    p.add_argument("--n-mels", type=int, help="mel bands of the audio input (default 128; other values need --audio-source audio)")
    p.add_argument("--chunk-frames", type=int, help="spectrogram frames per audio chunk (default 128 = 2.97 s)")
    p.add_argument("--augment", choices=list(AUGMENTATIONS),
                   help="training image augmentation: ours (default), reference (rotation at any angle, blur, "
                        "grid distortion, HSV shifts, no flips) or none")
    p.add_argument("--no-augment", dest="augment", action="store_const", const="none", help="--augment none")
    p.add_argument("--num-workers", type=int, help="data loader processes (default 2)")
    p.add_argument("--devices", type=int,
                   help="devices (processes) per node for data-parallel training (default 1; DDP when devices x "
                        "nodes > 1: every device's pairs are negatives in the loss, so a step compares batch size x "
                        "devices x nodes pairs)")
    p.add_argument("--num-nodes", type=int,
                   help="machines running this same command (default 1); Lightning takes the ranks from "
                        "MASTER_ADDR, MASTER_PORT and NODE_RANK, SLURM or torchrun (docs/scale.md)")
    p.add_argument("--sync-batchnorm", action="store_const", const=True,
                   help="under DDP on GPUs, batch norm with the statistics of every device's batch together, "
                        "so a step is the one a single device would take on the whole batch (default: each "
                        "device's own statistics, Lightning's default)")
    p.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda"])
    p.add_argument("--precision", help="auto (default), 32-true, bf16-mixed, 16-mixed")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_const", const=False)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int,
                   help="torch intra-op threads (default 0: torch's default); recorded, since results depend on it")
    p.add_argument("--max-minutes", type=float,
                   help="safety stop, not a budget: a run cut short by it is recorded as truncated")
    p.add_argument("--limit-train-batches", type=float, help="fraction or number of train batches per epoch")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also keep every N-th epoch's checkpoint (270 MB each for two ResNet-18s; default 0: "
                        "only last.ckpt and best.ckpt)")
    p.add_argument("--resume", nargs="?", const="last", help="continue from RUN_DIR/checkpoints/last.ckpt or a path")
    p.add_argument("--bundle-from", choices=list(BUNDLE_FROM),
                   help="the bundle's weights: best (lowest validation loss, default) or last (the last epoch's)")
    args = vars(p.parse_args(argv))
    cfg_path = args.pop("config")
    cfg = resolve_config(read_config_file(cfg_path) if cfg_path else {}, flags=args)
    if not cfg.data:
        p.error("--data is required (or data: in the config file)")
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    run(cfg)
    return 0



if __name__ == "__main__":
    sys.exit(run_cli(main))
