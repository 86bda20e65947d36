"""The results recipe: every run behind ``docs/results.md``, as exact command lines.

:func:`build_recipe` lists the runs in the order they must happen; each :class:`Run` is a few
steps (``python -m MODULE ARGS`` command lines, or copying a bundle folder) in its own work folder
``WORK/<section>/<name>`` and names the small JSON files that are kept in
``OUT/<section>/<name>/`` (never weights, never data). Sections:

1. ``data``: the synthetic pairs (``model.synth pairs`` + ``model.data.prepare``), a scene
   classification set (``model.synth classify``) and a DeepGlobe-layout set
   (``model.synth deepglobe --split``);
2. ``losses``: audiovisual pretraining with each loss at the same epochs, then
   ``model.evaluate retrieval --split test``;
3. ``inits``: audiovisual (batch-all), SimCLR and MoCo pretraining for each seed at the same data,
   batch and epochs as the loss runs (so the same optimiser steps; the audiovisual run of seed 0 is
   the batch-all run of ``losses``), and ``random``; then ``model.finetune classify`` and
   ``model.finetune segment`` for every initialisation and seed;
4. ``heads``: the soundscape head and the gallery on a copy of the batch-all bundle of ``losses``.

Every budget is in epochs (no wall-clock budget), every training run has ``--seed`` and
``--threads``. :data:`FULL` is sized for about an hour on a 2-core CPU (96 px images and 64 x 64
log-mel chunks as encoder inputs, batch 32, 10 epochs of the 600 pairs' training split: 130 steps, where 5 epochs left the
batch-all loss at chance); :data:`QUICK` shrinks every size and epoch for a test.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

SECTIONS = ("data", "losses", "inits", "heads")
LOSSES = ("batch_all_triplet", "contrastive", "naive_triplet")
PRETRAINED_INITS = ("audiovisual", "simclr", "moco")
INITS = (*PRETRAINED_INITS, "random")
TASKS = ("classify", "segment")
METRICS_FILE = "metrics.json"
TRAINING_FILE = "training.json"
SHARED_RUN = ("audiovisual", 0)  # this initialisation is the batch-all run of the loss table
COPY = "copy"  # the module name of a step that copies a folder (argv: source, target)


@dataclass(frozen=True)
class Sizes:
    """Every size of the recipe: data (items, pixels, seconds), budgets (epochs), batch, seeds, and the
    audio input (``n_mels`` mel bands x ``chunk_frames`` frames, read from ``audio_source``: 128 bands
    come from the spectrogram JPEGs, any other number needs the recordings, "audio")."""

    pairs: int
    pair_size: int
    duration: tuple[float, float]
    scenes: int
    scene_size: int
    tiles: int
    tile_size: int
    image_size: int
    batch_size: int
    pretrain_epochs: int
    classify_epochs: int
    segment_epochs: int
    segment_batch: int
    decoder_channels: int
    seeds: tuple[int, ...]
    n_mels: int = 128
    chunk_frames: int = 128
    audio_source: str = "spectrogram"
    threads: int = 2
    workers: int = 0
    data_seed: int = 1
    quick: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


FULL = Sizes(pairs=600, pair_size=256, duration=(6.0, 10.0), scenes=240, scene_size=128, tiles=48,
             tile_size=256, image_size=96, batch_size=32, pretrain_epochs=10, classify_epochs=4,
             segment_epochs=3, segment_batch=8, decoder_channels=64, seeds=(0, 1, 2), n_mels=64, chunk_frames=64,
             audio_source="audio")
QUICK = Sizes(pairs=60, pair_size=64, duration=(3.0, 3.5), scenes=24, scene_size=64, tiles=6, tile_size=64,
              image_size=32, batch_size=16, pretrain_epochs=1, classify_epochs=1, segment_epochs=1,
              segment_batch=4, decoder_channels=32, seeds=(0, 1), n_mels=64, chunk_frames=64, audio_source="audio",
              quick=True)


@dataclass(frozen=True)
class Step:
    """One command line ``python -m module *argv`` (module :data:`COPY`: copy folder argv[0] to argv[1])."""

    module: str
    argv: tuple[str, ...]

    def shell(self) -> str:
        """The step as one would type it."""
        if self.module == COPY:
            return f"cp -r {self.argv[0]} {self.argv[1]}"
        return " ".join(["python", "-m", self.module, *self.argv])


@dataclass(frozen=True)
class Run:
    """A named group of steps; ``keep`` maps a file below the work folder to its name in the
    results folder; ``needs`` names runs (``section/name``) whose work folders the steps read."""

    section: str
    name: str
    steps: tuple[Step, ...]
    keep: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.section}/{self.name}"


def _step(module: str, *argv: object) -> Step:
    return Step(module, tuple(str(a) for a in argv))


def _data_runs(work: Path, s: Sizes) -> list[Run]:
    pairs, scenes, tiles = work / "data" / "pairs", work / "data" / "classify", work / "data" / "deepglobe"
    return [
        Run("data", "pairs", (
            _step("model.synth", "pairs", "--out", pairs, "--samples", s.pairs, "--size", s.pair_size,
                  "--seed", s.data_seed, "--duration", *s.duration, "--quiet"),
            _step("model.data.prepare", pairs, "--size", s.pair_size // 2, "--crop", 0.5))),
        Run("data", "classify", (_step("model.synth", "classify", "--out", scenes, "--samples", s.scenes,
                                       "--size", s.scene_size, "--seed", s.data_seed + 4, "--quiet"),)),
        Run("data", "deepglobe", (_step("model.synth", "deepglobe", "--out", tiles, "--samples", s.tiles,
                                        "--size", s.tile_size, "--split", "--seed", s.data_seed + 5,
                                        "--quiet"),)),
    ]


def _pretrain_args(work: Path, s: Sizes, out: Path, seed: int) -> tuple:
    return ("--data", work / "data" / "pairs", "--out", out, "--image-size", s.image_size,
            "--batch-size", s.batch_size, "--epochs", s.pretrain_epochs, "--lr", "1e-3", "--num-workers", s.workers,
            "--seed", seed, "--threads", s.threads)


def _audio_args(s: Sizes) -> tuple:
    """The audio input of audiovisual pretraining."""
    return ("--audio-source", s.audio_source, "--n-mels", s.n_mels, "--chunk-frames", s.chunk_frames)


def _loss_runs(work: Path, s: Sizes) -> list[Run]:
    runs = []
    for loss in LOSSES:
        out = work / "losses" / loss
        runs.append(Run("losses", loss, (
            _step("model.pretrain", *_pretrain_args(work, s, out, 0), *_audio_args(s), "--loss", loss),
            _step("model.evaluate", "retrieval", "--bundle", out / "bundle", "--data", work / "data" / "pairs",
                  "--split", "test", "--audio-source", s.audio_source, "--out", out / "retrieval.json")),
            keep={"retrieval.json": METRICS_FILE, TRAINING_FILE: TRAINING_FILE}, needs=("data/pairs",)))
    return runs


def _pretrain_step(work: Path, s: Sizes, init: str, seed: int, out: Path) -> Step:
    args = _pretrain_args(work, s, out, seed)
    if init == "audiovisual":
        return _step("model.pretrain", *args, *_audio_args(s), "--loss", "batch_all_triplet")
    return _step("model.baselines", init, *args)


def _init_runs(work: Path, s: Sizes) -> list[Run]:
    runs = []
    for init in PRETRAINED_INITS:
        for seed in s.seeds:
            if (init, seed) == SHARED_RUN:
                continue
            name = f"pretrain-{init}-s{seed}"
            runs.append(Run("inits", name, (_pretrain_step(work, s, init, seed, work / "inits" / name),),
                            keep={TRAINING_FILE: TRAINING_FILE}, needs=("data/pairs",)))
    for init in INITS:
        for seed in s.seeds:
            runs += _finetune_runs(work, s, init, seed)
    return runs


def init_run(init: str, seed: int) -> str | None:
    """The run (``section/name``) whose bundle is initialisation ``init`` of ``seed``; None for random."""
    if init == "random":
        return None
    return "losses/batch_all_triplet" if (init, seed) == SHARED_RUN else f"inits/pretrain-{init}-s{seed}"


def _finetune_runs(work: Path, s: Sizes, init: str, seed: int) -> list[Run]:
    run = init_run(init, seed)
    source = "random" if run is None else work / run / "bundle"
    needs = () if run is None else (run,)
    common = ("--init", source, "--label", init, "--seed", seed, "--threads", s.threads,
              "--num-workers", s.workers)
    classify_out = work / "inits" / f"classify-{init}-s{seed}"
    segment_out = work / "inits" / f"segment-{init}-s{seed}"
    keep = {METRICS_FILE: METRICS_FILE, TRAINING_FILE: TRAINING_FILE}
    return [
        Run("inits", classify_out.name, (_step(
            "model.finetune", "classify", "--data", work / "data" / "classify", *common, "--name",
            "synthetic-scenes", "--epochs", s.classify_epochs, "--image-size", s.image_size,
            "--test-ratio", 0.5, "--batch-size", s.batch_size, "--out", classify_out),),
            keep=keep, needs=("data/classify", *needs)),
        Run("inits", segment_out.name, (_step(
            "model.finetune", "segment", "--data", work / "data" / "deepglobe", *common, "--name",
            "synthetic-deepglobe", "--epochs", s.segment_epochs, "--crop-size", s.image_size,
            "--decoder-channels", s.decoder_channels, "--batch-size", s.segment_batch, "--out", segment_out),),
            keep=keep, needs=("data/deepglobe", *needs)),
    ]


def _head_runs(work: Path, s: Sizes) -> list[Run]:
    source, out = work / "losses" / "batch_all_triplet", work / "heads" / "batch_all_triplet"
    pairs = work / "data" / "pairs"
    return [Run("heads", "batch_all_triplet", (
        _step(COPY, source / "bundle", out / "bundle"),
        _step("model.soundscape", "--bundle", out / "bundle", "--data", pairs, "--audio-source", s.audio_source),
        _step("model.gallery", "--bundle", out / "bundle", "--data", pairs, "--audio-source", s.audio_source),
        _step("model.evaluate", "gallery", "--bundle", out / "bundle", "--data", pairs, "--split", "test",
              "--audio-source", s.audio_source, "--out", out / "gallery.json")),
        keep={"gallery.json": "gallery.json", "bundle/bundle.json": "bundle.json"},
        needs=("data/pairs", "losses/batch_all_triplet"))]


def build_recipe(work: str | Path, quick: bool = False) -> list[Run]:
    """Every run of the recipe, in order (a run comes after the runs it needs)."""
    work, sizes = Path(work), (QUICK if quick else FULL)
    return [*_data_runs(work, sizes), *_loss_runs(work, sizes), *_init_runs(work, sizes),
            *_head_runs(work, sizes)]


def sizes_of(quick: bool) -> Sizes:
    """:data:`QUICK` or :data:`FULL`."""
    return QUICK if quick else FULL
