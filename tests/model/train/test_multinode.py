"""Training at scale (docs/scale.md): ``python -m model.pretrain --devices N --num-nodes M``
with Lightning's own launch, tested as two processes posing as two nodes on the loopback address
with gloo; and every process's negatives in the loss, the step equal to one process's on the whole
batch.

Nothing here is mocked: real ``python -m model.pretrain`` commands, real Lightning, real gloo
process groups. Each process gets one thread (the machines running the tests have 2 cores), and
every wait has a deadline, so a rendezvous that never completes fails the test instead of hanging.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pytest

from tests.bundles import ROOT

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
DEADLINE_S = 180  # per launch: two cold processes import torch and Lightning (97 s seen at load 5 on 2 cores)
TINY = ["--stem-width", "8", "--widths", "8", "16", "24", "32", "--embed-dim", "16", "--image-size", "32",
        "--audio-source", "audio", "--n-mels", "32", "--chunk-frames", "32"]
TINY_SPEC = dict(arch="custom", block="basic", layers=[1, 1, 1, 1], stem_width=8, widths=[8, 16, 24, 32],
                 embed_dim=16)
# variables by which another launcher (SLURM, torchrun, an outer DDP job) would claim the processes
FOREIGN = ("SLURM_", "TORCHELASTIC_", "PMI_", "OMPI_", "LSB_")
RANK_VARIABLES = ("LOCAL_RANK", "RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK",
                  "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """20 tiny SoundingEarth-format pairs (14 train, 2 validation): a batch of 4 for each of two processes."""
    from model.synth.pairs import write_pairs

    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs", 20, size=64, seed=3, duration=(1.5, 2.0),
                       workers=1, progress=False)


def _node_env(node_rank: int, port: int) -> dict[str, str]:
    """The environment of one "node": this one's, less any launcher's, plus what Lightning's
    LightningEnvironment reads for a multi-node run (it derives WORLD_SIZE from the flags)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN) and k not in RANK_VARIABLES}
    return {**env, **ONE_THREAD, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "NODE_RANK": str(node_rank), "PYTHONUNBUFFERED": "1"}


def _launch_nodes(commands: list[list[str]], port: int, logs: Path) -> list[tuple[int, str]]:
    """Start one process per command as node 0, 1, ... and wait for all of them until the deadline;
    returns (exit status, output) per node. At the deadline every one still running is killed and
    the test fails, showing what each printed."""
    procs = []
    try:
        for rank, command in enumerate(commands):
            log = open(logs / f"node{rank}.log", "w")
            procs.append((subprocess.Popen(command, cwd=ROOT, env=_node_env(rank, port), stdout=log,
                                           stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + DEADLINE_S
        for proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        hung = [proc.pid for proc, _ in procs if proc.poll() is None]
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            log.close()
    outputs = [(proc.returncode, (logs / f"node{rank}.log").read_text()) for rank, (proc, _) in enumerate(procs)]
    if hung:
        pytest.fail(f"processes {hung} still running after {DEADLINE_S} s (rendezvous or collective hung):\n"
                    + "\n".join(f"--- node {rank}\n{out[-3000:]}" for rank, (_, out) in enumerate(outputs)))
    return outputs


@pytest.mark.slow  # 60-100 s on 2 busy cores: two cold processes import torch and Lightning, one tiny step each
def test_two_nodes_on_loopback_train_together_and_node_zero_writes_the_run(pairs, tmp_path):
    import json

    import yaml

    import model.bundle as bundle_mod
    from lightning.fabric.plugins.environments.lightning import find_free_network_port

    runs = [tmp_path / "node0", tmp_path / "node1"]  # separate disks: what node 1 writes would show
    flags = ["--data", str(pairs), "--epochs", "1", "--batch-size", "4", "--limit-train-batches", "1",
             "--num-workers", "0", "--precision", "32-true", "--accelerator", "cpu", "--threads", "1",
             "--loss", "contrastive", "--devices", "1", "--num-nodes", "2", *TINY]
    commands = [[sys.executable, "-m", "model.pretrain", *flags, "--out", str(out)] for out in runs]
    outputs = _launch_nodes(commands, find_free_network_port(), tmp_path)
    for rank, (status, output) in enumerate(outputs):
        assert status == 0, f"node {rank} exited with {status}:\n{output[-3000:]}"
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output  # the ranks came from NODE_RANK

    node0, node1 = runs
    record = json.loads((node0 / "training.json").read_text())
    assert record["world_size"] == 2 and record["steps"] == 1 and record["threads"] == 1
    assert not record["sync_batchnorm"]  # CPU: each process's own batch norm statistics
    provenance = bundle_mod.load(node0 / "bundle").meta["provenance"]
    assert provenance["world_size"] == 2 and provenance["steps"] == record["steps"]
    assert {p.name for p in (node0 / "checkpoints").iterdir()} == {"last.ckpt", "best.ckpt"}
    config = yaml.safe_load((node0 / "config.yaml").read_text())
    assert (config["devices"], config["num_nodes"]) == (1, 2)
    assert "bundle written to" in outputs[0][1] and "bundle written to" not in outputs[1][1]
    assert [p for p in node1.rglob("*") if p.is_file()] == []  # global rank 1 wrote nothing


def test_sync_batchnorm_on_cpu_and_a_node_count_below_one_are_one_line_errors(pairs, tmp_path):
    from model.pretrain import parse_args
    from model.train.pretrain import run

    with pytest.raises(ValueError, match="devices and num_nodes must be at least 1, got 1 and 0"):
        parse_args(["--data", str(pairs), "--num-nodes", "0"])
    cfg = parse_args(["--data", str(pairs), "--out", str(tmp_path / "run"), "--accelerator", "cpu",
                      "--devices", "1", "--num-nodes", "2", "--sync-batchnorm", *TINY])
    assert (cfg.num_nodes, cfg.sync_batchnorm) == (2, True)
    with pytest.raises(ValueError, match="sync_batchnorm needs GPUs"):
        run(cfg)  # refused before the process group is set up: no rendezvous with a node 1
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert parse_args(["--data", "x"]).sync_batchnorm is False  # Lightning's default


# ---- every process's negatives in the loss ----------------------------------------------------

WORLD = 2
COUNTS = [1, 2, 1, 3, 1, 2]  # audio chunks per recording: 6 pairs, 10 chunks
# (loss, pairs on rank 0): an even and an uneven split (rank 1 gets the rest)
CASES = [("batch_all_triplet", 3), ("contrastive", 2)]


def _batch() -> dict:
    """A fixed batch in the layout of model.data.collate: images, every recording's chunks, counts."""
    import torch

    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(len(COUNTS), 3, 32, 32, generator=g),
            "audio": torch.randn(sum(COUNTS), 1, 32, 32, generator=g), "counts": list(COUNTS)}


def _share(batch: dict, pairs: slice) -> dict:
    """The pairs ``pairs`` of a batch, with their chunks."""
    first = sum(COUNTS[: pairs.start])
    return {"image": batch["image"][pairs], "counts": batch["counts"][pairs],
            "audio": batch["audio"][first: first + sum(batch["counts"][pairs])]}


def _model(loss: str):
    """The pretraining module with tiny encoders, the same weights in every process, batch norm on
    running statistics (train-mode batch norm normalises each process's share by itself unless
    synchronised, which torch does on GPUs only: that is docs/scale.md's caveat, not the
    gather's)."""
    import torch

    from model.train.audiovisual import AudioVisualModel

    torch.manual_seed(0)
    specs = dict(image_spec={**TINY_SPEC, "in_channels": 3}, audio_spec={**TINY_SPEC, "in_channels": 1})
    return AudioVisualModel(**specs, loss=loss).eval()


def _step_result(model, step, batch: dict) -> dict:
    """Loss and every parameter's gradient after ``step(batch)`` (the module's training step) and backward."""
    model.zero_grad()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer attached: nothing to log to
        loss = step(batch)
    loss.backward()
    return {"loss": loss.detach(), **{name: p.grad.detach().clone() for name, p in model.named_parameters()}}


def _rank_worker(rank: int, port: int, out: str) -> None:
    """One of two gloo processes: each case's module step on this rank's share under DDP."""
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    class TrainingStep(nn.Module):
        """The module's training step as a forward pass, so DDP averages the gradients it gives."""

        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, batch: dict) -> torch.Tensor:
            return self.module.training_step(batch, 0)

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        for loss, split in CASES:
            model = _model(loss)
            ddp = DistributedDataParallel(TrainingStep(model))
            share = _share(_batch(), slice(0, split) if rank == 0 else slice(split, len(COUNTS)))
            torch.save(_step_result(model, ddp, share), Path(out) / f"{loss}_rank{rank}.pt")
        dist.barrier()  # neither tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def test_two_processes_gather_every_negative_and_match_one_process_on_the_whole_batch(tmp_path):
    import torch
    import torch.multiprocessing as mp
    from lightning.fabric.plugins.environments.lightning import find_free_network_port

    # spawned, not forked: a fork of a pytest process whose earlier tests ran backward passes cannot
    # run autograd (PyTorch's autograd threads do not survive a fork); each runs one thread
    context = mp.start_processes(_rank_worker, args=(find_free_network_port(), str(tmp_path)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"gloo processes still running after {DEADLINE_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    for loss, split in CASES:
        model = _model(loss)
        expected = _step_result(model, lambda batch: model.training_step(batch, 0), _batch())
        for rank in range(WORLD):
            got = torch.load(tmp_path / f"{loss}_rank{rank}.pt", weights_only=True)
            assert set(got) == set(expected) and len(expected) > 20  # every parameter of both encoders
            for name, value in expected.items():
                torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6, msg=f"{loss} rank {rank} {name}")
