"""Training throughput: samples/s of a full pretraining step, ours against the published baseline.

One run, side by side, batch 32, 192 x 192 px images and one 128 x 128 log-mel chunk per pair:

- reference: the published network (model/nn/reference_net.py: stem 32, planes 64/182/256/512,
  1x1-conv heads, fc on the image feature map), plain fp32 eager, Adam, and the published form
  of the batch-all loss (mean over the full N x N matrix, diagonal included);
- ours fp32: ResNet-18 on both sides (model/nn/encoders.py), channels-last, AdamW, BatchAllTripletLoss;
- ours default: as above with bf16 autocast where the CPU (or GPU) supports it;
- loader: the real DataLoader on a synthetic SoundingEarth folder (training augmentations,
  spectrogram JPEGs), alone and feeding our default step.

Only the ratios mean anything (machines of one type differ by up to 2x between sessions).

    python benchmarks/train_throughput.py [--steps 6] [--batch 32] [--data DIR] [--workers 2]
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from model.nn.encoders import AudioEncoder, EncoderSpec, ResNetEncoder
from model.nn.losses import BatchAllTripletLoss, PublishedBatchAllTripletLoss
from model.train.trainer import cpu_supports_bf16
from model.nn.reference_net import ReferenceModel


def _autocast(device: str, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


def make_reference(device: str):
    model = ReferenceModel(18).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = PublishedBatchAllTripletLoss(margin=1.0)

    def step(images, chunks):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model.img_encoder(images), model.snd_encoder(chunks))
        loss.backward()
        opt.step()
        return loss

    return step


def make_ours(device: str, dtype):
    image = ResNetEncoder(EncoderSpec.from_arch("resnet18", 3, 128)).to(device, memory_format=torch.channels_last)
    audio = AudioEncoder(EncoderSpec.from_arch("resnet18", 1, 128)).to(device, memory_format=torch.channels_last)
    params = list(image.parameters()) + list(audio.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4, foreach=True)
    loss_fn = BatchAllTripletLoss(margin=1.0)

    def step(images, chunks):
        images = images.contiguous(memory_format=torch.channels_last)
        chunks = chunks.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            z_img, z_audio = image(images), audio(chunks)
        loss = loss_fn(z_img.float(), z_audio.float())
        loss.backward()
        opt.step()
        return loss

    return step


def time_steps(step, batches, device: str) -> float:
    """samples/s over ``batches`` after two warm-up steps."""
    for images, chunks in batches[:2]:
        step(images, chunks)
    if device == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    for images, chunks in batches[2:]:
        step(images, chunks)
        n += len(images)
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def synthetic_folder(path: Path | None, samples: int) -> Path:
    from model.synth.pairs import write_pairs

    if path is not None:
        return path
    out = Path(tempfile.mkdtemp(prefix="bench-train-")) / "pairs"
    write_pairs(out, samples, size=512, seed=0, duration=(6.0, 8.0))
    return out


def loader_rates(root: Path, batch: int, workers: int, step, steps: int, device: str) -> tuple[float, float]:
    """(loader alone, loader + our step) in samples/s."""
    from torch.utils.data import DataLoader

    from model.data import SoundingEarthDataset, collate

    ds = SoundingEarthDataset(root, split="all", augment=True, random_audio_chunk=True)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                        drop_last=True, persistent_workers=workers > 0)
    rates = []
    for with_step in (False, True):
        n, start, it = 0, None, 0
        while it < steps + 1:
            for b in loader:
                if with_step:
                    step(b["image"].to(device), b["audio"].to(device))
                if it == 0:
                    start = time.perf_counter()  # first batch is warm-up (worker start)
                else:
                    n += len(b["image"])
                it += 1
                if it >= steps + 1:
                    break
        rates.append(n / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--data", type=Path, help="a SoundingEarth-format folder (default: generate 96 pairs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = args.device
    torch.manual_seed(0)
    batches = [(torch.randn(args.batch, 3, 192, 192, device=device), torch.randn(args.batch, 1, 128, 128, device=device))
               for _ in range(args.steps + 2)]
    bf16 = torch.bfloat16 if (device == "cuda" and torch.cuda.is_bf16_supported()) or cpu_supports_bf16() else None
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, default autocast {bf16}")
    ref = time_steps(make_reference(device), batches, device)
    ours32 = time_steps(make_ours(device, None), batches, device)
    ours = time_steps(make_ours(device, bf16), batches, device)
    root = synthetic_folder(args.data, 96)
    load_alone, load_step = loader_rates(root, args.batch, args.workers, make_ours(device, bf16), args.steps, device)
    rows = [("reference (published net, fp32 eager, Adam)", ref),
            ("ours fp32 channels-last", ours32),
            (f"ours default (channels-last, autocast {bf16})", ours),
            (f"loader alone ({args.workers} workers)", load_alone),
            ("loader + ours default", load_step)]
    print(f"\n{'configuration':52s} {'samples/s':>10s} {'x reference':>12s}")
    for name, rate in rows:
        print(f"{name:52s} {rate:10.1f} {rate / ref:12.2f}")
    print(f"\nloader headroom: loader alone is {load_alone / ours:.2f}x our in-memory step")


if __name__ == "__main__":
    main()
