"""Training throughput: samples/s of a full pretraining step, ours against the published baseline,
and the step fed by the real loader against its bound, idle and beside busy loops of other work.

One run, side by side, batch 32, 192 x 192 px images and one 128 x 128 log-mel chunk per pair:

- reference: the published network (model/nn/reference_net.py: stem 32, planes 64/182/256/512,
  1x1-conv heads, fc on the image feature map), plain fp32 eager, Adam, and the published form
  of the batch-all loss (mean over the full N x N matrix, diagonal included);
- ours fp32: ResNet-18 on both sides (model/nn/encoders.py), channels-last, AdamW, BatchAllTripletLoss;
- ours default: as above with bf16 autocast where the CPU (or GPU) supports it;
- fed: the training run's own loader (``SoundingEarthDataModule``: training split, augmentations,
  the prepared image cache, spectrogram JPEGs) alone, our default step alone, and the loader
  feeding the step, under the training run's thread budget (:mod:`model.train.threads`); once on
  the idle machine and once beside ``--busy N`` processes that spin (other work). Each condition's
  bound ``1 / (1/step + 1/loader)`` is measured under that condition; targets: >= 0.8 of it idle,
  >= 0.5 busy.

Only the ratios mean anything (machines of one type differ by up to 2x between sessions).

    python benchmarks/train_throughput.py [--steps 6] [--batch 32] [--data DIR] [--workers 2] [--busy 2]
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from model.train.threads import prepare_process

WAIT_POLICY = prepare_process()  # before torch is imported: the training run's thread budget

import torch  # noqa: E402

from model.nn.encoders import AudioEncoder, EncoderSpec, ResNetEncoder
from model.nn.losses import BatchAllTripletLoss, PublishedBatchAllTripletLoss
from model.nn.reference_net import ReferenceModel
from model.train.trainer import cpu_supports_bf16


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
    """The benchmark's SoundingEarth folder (generated when not given) with its prepared image
    cache, as a training run finds it after ``python -m model.data.prepare``."""
    from model.data.prepare import prepare_images
    from model.synth.pairs import write_pairs

    if path is None:
        path = Path(tempfile.mkdtemp(prefix="bench-train-")) / "pairs"
        write_pairs(path, samples, size=512, seed=0, duration=(6.0, 8.0), progress=False)
    prepare_images(path, progress=False)
    return path


def _spin() -> None:  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


@contextlib.contextmanager
def busy_loops(n: int):
    """``n`` processes, each a pure-Python busy loop (other work on the machine), for the block."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        time.sleep(0.5 if n else 0.0)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()


def loader_rates(root: Path, batch: int, workers: int, step, steps: int, device: str,
                 image_size: int = 192) -> tuple[float, float]:
    """(loader alone, loader feeding ``step``) in samples/s, with the training run's own loader
    (:class:`model.data.datamodule.SoundingEarthDataModule`: training split, augmentations,
    prepared image cache, its worker initialiser), each after one warm-up batch."""
    from model.bundle.image_input import ImageInput
    from model.data.datamodule import SoundingEarthDataModule

    module = SoundingEarthDataModule(root, batch_size=batch, num_workers=workers,
                                     image_input=ImageInput(tile_size=image_size))
    module.setup()
    rates = []
    for with_step in (False, True):
        loader = module.train_dataloader()
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


def bound(step: float, loader: float) -> float:
    """What a step fed by the loader can reach when the two share the CPU one after the other:
    ``1 / (1 / step + 1 / loader)`` samples/s."""
    return 1.0 / (1.0 / step + 1.0 / loader)


def fed_rates(root: Path, args, bf16, busy: int) -> dict[str, float]:
    """Step alone, loader alone and the two together (samples/s) under ``busy`` background loops,
    each bound measured under that same condition."""
    torch.manual_seed(0)
    batches = [(torch.randn(args.batch, 3, args.image_size, args.image_size, device=args.device),
                torch.randn(args.batch, 1, 128, 128, device=args.device)) for _ in range(args.steps + 2)]
    with busy_loops(busy):
        step = time_steps(make_ours(args.device, bf16), batches, args.device)
        loader, both = loader_rates(root, args.batch, args.workers, make_ours(args.device, bf16), args.steps,
                                    args.device, args.image_size)
    return {"step": step, "loader": loader, "both": both, "bound": bound(step, loader)}


def reference_rows(args, bf16) -> list[tuple[str, float]]:
    """Our step against the published network, in memory (no loader)."""
    torch.manual_seed(0)
    batches = [(torch.randn(args.batch, 3, 192, 192, device=args.device),
                torch.randn(args.batch, 1, 128, 128, device=args.device)) for _ in range(args.steps + 2)]
    return [("reference (published net, fp32 eager, Adam)", time_steps(make_reference(args.device), batches, args.device)),
            ("ours fp32 channels-last", time_steps(make_ours(args.device, None), batches, args.device)),
            (f"ours default (channels-last, autocast {bf16})", time_steps(make_ours(args.device, bf16), batches,
                                                                        args.device))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=192, help="encoder input in pixels (default 192)")
    p.add_argument("--data", type=Path, help="a SoundingEarth-format folder (default: generate 160 pairs)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--busy", type=int, default=2, help="background busy loops of the busy condition (0: idle only)")
    p.add_argument("--no-reference", action="store_true", help="skip the comparison with the published network")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    bf16 = torch.bfloat16 if (args.device == "cuda" and torch.cuda.is_bf16_supported()) or cpu_supports_bf16() else None
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, cores "
          f"{os.cpu_count()}, batch {args.batch}, image {args.image_size} px, {args.workers} loader workers, "
          f"default autocast {bf16}, OpenMP wait policy {WAIT_POLICY}")
    if not args.no_reference:
        rows = reference_rows(args, bf16)
        ref = rows[0][1]
        print(f"\n{'configuration (in memory, idle)':52s} {'samples/s':>10s} {'x reference':>12s}")
        for name, rate in rows:
            print(f"{name:52s} {rate:10.1f} {rate / ref:12.2f}")
    root = synthetic_folder(args.data, 160)
    conditions = [("idle", 0, 0.8)] + ([(f"busy ({args.busy} loops)", args.busy, 0.5)] if args.busy else [])
    print(f"\n{'condition':16s} {'step':>8s} {'loader':>8s} {'both':>8s} {'bound':>8s} {'both/bound':>11s} {'target':>7s}")
    for name, busy, target in conditions:
        r = fed_rates(root, args, bf16, busy)
        ratio = r["both"] / r["bound"]
        print(f"{name:16s} {r['step']:8.1f} {r['loader']:8.1f} {r['both']:8.1f} {r['bound']:8.1f} "
              f"{ratio:11.2f} {'>=' + format(target, '.2f'):>7s}{'' if ratio >= target else '  MISSED'}")
    print("\nsamples/s; bound = 1 / (1/step + 1/loader), each measured under the same condition")


if __name__ == "__main__":
    main()
