"""Tests for model/nn/gather.py: two gloo processes with DDP reproduce single-process losses and gradients."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model.nn.gather import all_gather_with_grad
from model.nn.losses import BatchAllTripletLoss, ContrastiveLoss

WORLD = 2
BATCH = 8
# (loss, rows of the batch on rank 0); rank 1 gets the rest
CASES = [("batch_all_triplet", 4), ("contrastive", 4), ("batch_all_triplet", 3)]


class PairEncoder(nn.Module):
    """Two tiny linear encoders with fixed initial weights: images (6 features), audio (5 features)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(6, 4)
        self.audio = nn.Linear(5, 4)

    def forward(self, x_img: torch.Tensor, x_audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(x_img), self.audio(x_audio)


def _loss(name: str) -> nn.Module:
    return BatchAllTripletLoss(margin=1.0) if name == "batch_all_triplet" else ContrastiveLoss(tau=0.2)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 6, generator=g) * 0.3, torch.randn(BATCH, 5, generator=g) * 0.3


def _step(model: nn.Module, x_img, x_audio, loss_name: str, gather: bool) -> dict[str, torch.Tensor]:
    """One forward/backward; returns the loss and every parameter gradient."""
    model.zero_grad()
    z_img, z_audio = model(x_img, x_audio)
    if gather:
        z_img, z_audio = all_gather_with_grad(z_img), all_gather_with_grad(z_audio)
    loss = _loss(loss_name)(z_img, z_audio)
    loss.backward()
    module = model.module if isinstance(model, DistributedDataParallel) else model
    out = {"loss": loss.detach(), "rows": torch.tensor(z_img.shape[0])}
    out.update({name: p.grad.detach().clone() for name, p in module.named_parameters()})
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = DistributedDataParallel(PairEncoder())
        x_img, x_audio = _batch()
        for k, (loss_name, split) in enumerate(CASES):
            rows = slice(0, split) if rank == 0 else slice(split, BATCH)
            result = _step(model, x_img[rows], x_audio[rows], loss_name, gather=True)
            torch.save(result, Path(out_dir) / f"case{k}_rank{rank}.pt")
        dist.barrier()  # neither rank tears gloo down while the other still talks to it (std::terminate)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gather_matches_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    x_img, x_audio = _batch()
    for k, (loss_name, _) in enumerate(CASES):
        expected = _step(PairEncoder(), x_img, x_audio, loss_name, gather=False)
        for rank in range(WORLD):
            got = torch.load(tmp_path / f"case{k}_rank{rank}.pt", weights_only=True)
            assert got["rows"].item() == BATCH  # every rank saw the whole batch
            assert set(got) == set(expected)
            for name, value in expected.items():
                torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-7, msg=f"case {k} {name}")


def test_without_distributed_returns_input_unchanged():
    assert not dist.is_initialized()
    x = torch.randn(3, 4, requires_grad=True)
    assert all_gather_with_grad(x) is x
