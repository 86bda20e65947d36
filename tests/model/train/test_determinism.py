"""Same command, seed and thread count -> same bundle, on a busy and on an idle machine; budgets in
epochs, and a wall-clock limit that only truncates loudly."""
from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager

import pytest

import model.bundle as bundle_mod
from model.synth.pairs import write_pairs
from model.train.pretrain import PretrainConfig, run
from model.train.run_record import TRAINING_FILE

BUSY_LOOPS = 2  # as many CPU-bound processes as the 2-core test machine has cores
pytestmark = pytest.mark.slow  # six tiny pretrainings, two of them beside busy loops


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """30 small pairs (64 px, 3 s): 21 train and 3 validation pairs by the key-mod-10 split."""
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs", 30, size=64, seed=5, duration=(3.0, 3.0),
                       workers=1, progress=False)


@contextmanager
def busy_machine(loops: int = BUSY_LOOPS):
    """``loops`` child Python processes spinning on the CPU for the duration of the block."""
    children = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(loops)]
    try:
        yield
    finally:
        for child in children:
            child.kill()
            child.wait()


def _pretrain(pairs, out, num_workers: int = 0, seed: int = 7, epochs: int = 1, **overrides):
    """A tiny pretraining (5 steps of 4 pairs per epoch, 32 px, 16-d) with 2 threads; its bundle."""
    cfg = PretrainConfig(data=str(pairs), out=str(out), epochs=epochs, batch_size=4, image_size=32, embed_dim=16,
                         num_workers=num_workers, precision="32-true", accelerator="cpu", seed=seed, threads=2,
                         **overrides)
    return bundle_mod.load(run(cfg))


@pytest.fixture(scope="module")
def idle(pairs, tmp_path_factory):
    """The tiny pretraining of seed 7 without loader workers, run on the machine as it is."""
    out = tmp_path_factory.mktemp("idle")
    return out, _pretrain(pairs, out)


def test_the_same_command_gives_the_same_bundle_on_a_busy_machine(pairs, idle, tmp_path):
    out, first = idle
    with busy_machine():
        busy = _pretrain(pairs, tmp_path / "busy")
    assert busy.content_hash() == first.content_hash()
    provenance = first.meta["provenance"]
    assert provenance["seed"] == 7 and provenance["threads"] == 2 and provenance["deterministic"] is True
    assert provenance["epochs"] == provenance["epochs_run"] == 1 and provenance["steps"] == 5
    assert provenance["truncated"] is False and "seconds" not in provenance  # no wall-clock figure in the bytes
    record = json.loads((out / TRAINING_FILE).read_text())
    assert record["steps"] == 5 and record["seconds"] > 0 and record["truncated"] is False


def test_with_loader_workers_too(pairs, tmp_path):
    idle_run = _pretrain(pairs, tmp_path / "idle", num_workers=2)
    with busy_machine():
        busy_run = _pretrain(pairs, tmp_path / "busy", num_workers=2)
    assert busy_run.content_hash() == idle_run.content_hash()


def test_another_seed_gives_another_bundle(pairs, idle, tmp_path):
    other = _pretrain(pairs, tmp_path / "other", seed=8)
    assert other.content_hash() != idle[1].content_hash() and other.meta["provenance"]["seed"] == 8


def test_a_run_cut_short_by_its_safety_stop_says_so_and_is_recorded_as_truncated(pairs, tmp_path, capsys):
    bundle = _pretrain(pairs, tmp_path / "cut", epochs=2, max_minutes=1e-6)  # stops after the first step
    err = capsys.readouterr().err
    assert "TRUNCATED" in err and "safety stop" in err
    provenance = bundle.meta["provenance"]
    assert provenance["truncated"] is True and provenance["steps"] == 1 and provenance["epochs"] == 2
    assert json.loads((tmp_path / "cut" / TRAINING_FILE).read_text())["truncated"] is True
