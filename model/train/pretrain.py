"""``python -m model.pretrain``: audiovisual pretraining on a SoundingEarth-format folder.

Writes into ``--out RUN_DIR``: ``config.yaml`` (the full configuration), ``checkpoints/``
(``last.ckpt``, ``best.ckpt`` by validation loss, and every N-th epoch's with
``--checkpoint-every N``), ``logs/`` (CSV and
TensorBoard), ``training.json`` (:mod:`model.train.run_record`: steps and epochs done, seed,
threads, seconds, ``truncated``) and finally ``bundle/`` (bundle.json + weights.safetensors) from
the best checkpoint. ``--resume`` continues from ``RUN_DIR/checkpoints/last.ckpt`` (or a given path).

The budget is ``epochs``; ``max_minutes`` is only a safety stop (:mod:`model.train.safety_stop`).
The run is seeded and deterministic (:mod:`model.train.determinism`) with ``threads`` intra-op
threads (0: torch's default, recorded), so the same config gives the same bundle.

Every option can come from a YAML file (``--config``); command-line flags override it.

Scale (docs/scale.md): ``devices`` processes on each of ``num_nodes`` nodes train
data-parallel, every node running the same command; Lightning's environment (``MASTER_ADDR``,
``MASTER_PORT``, ``NODE_RANK``, SLURM, torchrun) decides the ranks. Every process's embeddings are
all-gathered into the loss (:mod:`model.nn.gather`), so a step compares ``batch_size x devices x
num_nodes`` pairs. Batch norm normalises each process's share with its own statistics (Lightning's
default); on GPUs ``sync_batchnorm`` uses the whole gathered batch's instead, which makes the step the
one a single process would take on that whole batch. Everything under ``--out`` is
written by global rank 0 alone: a shared run folder gets one copy, and on separate disks the run
lives on node 0's.

Presets (``--preset``, :data:`PRESETS`) fill in the options a user does not give: ``ours`` (the
defaults below) or ``reference``, the SoundingEarth reference code's pretraining
(:data:`REFERENCE_PRETRAIN`): Adam at 1e-3, constant, no weight decay, batch 256, 300 epochs
(khdlr/SoundingEarth ``config.py``, ``config.yml`` and ``train.py``); its batch-all triplet loss
over the full N x N matrix (``lib/loss_functions.py`` ``TripletLoss``:
:class:`~model.nn.losses.PublishedBatchAllTripletLoss`); its augmentation (``data_loading.py``:
:class:`~model.data.transforms.ReferenceAugment`); the published checkpoints' widths, stem 32 and
stages 64/182/256/512, for both encoders; the 1x1-convolution head's initialisation (``fc`` drawn
as the reference's ``kaiming_normal_(mode="fan_out")``); and the bundle from the last epoch, as
``train.py`` evaluates ``latest.pt``. Precedence: the preset, then the YAML file, then flags; the
run's ``config.yaml`` and its bundle's provenance (``preset``, ``settings``) record the result.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from model.bundle.image_input import ImageInput
from model.core.cli import CLIError, fail
from model.core.errors import one_line
from model.nn.checkpoint_file import CheckpointError, load_checkpoint

LOSS_NAMES = ("batch_all_triplet", "naive_triplet", "contrastive", "batch_all_reference")
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "constant")
AUGMENTATIONS = ("ours", "reference", "none")
HEAD_INITS = ("ours", "reference")
BUNDLE_FROM = ("best", "last")

REFERENCE_PRETRAIN: dict[str, Any] = {
    "optimizer": "adam", "schedule": "constant", "lr": 1e-3, "weight_decay": 0.0,
    "batch_size": 256, "epochs": 300, "loss": "batch_all_reference", "margin": 1.0,
    "augment": "reference", "stem_width": 32, "widths": [64, 182, 256, 512], "head_init": "reference",
    "bundle_from": "last", "image_arch": "resnet18", "audio_arch": "resnet18", "embed_dim": 128,
    "image_size": 192, "crop": 0.375,
}
"""What ``--preset reference`` sets (module doc; docs/fidelity.md)."""
PRESETS: dict[str, dict[str, Any]] = {"ours": {}, "reference": REFERENCE_PRETRAIN}


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on (units: pixels, metres per pixel, seconds).

    image_mean, image_std: per-band normalisation of the encoder input on the 0-1 scale (None:
    :class:`~model.bundle.image_input.ImageInput`'s defaults, ImageNet's); the bundle records them.
    n_mels, chunk_frames: the audio encoder's input, mel bands x frames per chunk
    (:class:`~model.bundle.audio.AudioConfig`; 128 x 128 frames at 22,050 Hz and hop 512 = 2.97 s);
    spectrogram JPEGs hold 128 bands, so other sizes need ``audio_source: audio``.
    epochs: the training budget; max_minutes > 0: a wall-clock safety stop that marks the run
    truncated; threads: torch intra-op threads (0: torch's default); checkpoint_every N > 0: keep
    every N-th epoch's checkpoint besides ``last.ckpt`` and ``best.ckpt`` (0: only those two).
    preset: the preset the other values were filled in from (:data:`PRESETS`; recorded only: build
    a config from a preset with :meth:`from_preset` or :func:`resolve_config`).
    optimizer: ``adamw`` (decoupled ``weight_decay``) or ``adam`` (``weight_decay`` as an L2 term);
    schedule: ``cosine`` (decay over the epochs) or ``constant``.
    stem_width, widths: both encoders' stem channels and stage planes (0 / None: the arch's own,
    64 and 64/128/256/512); other values make a ``custom`` EncoderSpec.
    augment: ``ours`` (:class:`~model.data.transforms.TrainAugment`), ``reference``
    (:class:`~model.data.transforms.ReferenceAugment`) or ``none``; YAML true / false mean ours / none.
    head_init: ``ours`` (torch's Linear default) or ``reference`` (the reference's 1x1-conv head:
    Kaiming normal, fan out, std sqrt(2 / embed_dim)). bundle_from: ``best`` (lowest validation
    loss) or ``last`` (the last epoch's weights).
    devices, num_nodes: processes per node and nodes; more than one process in all trains with DDP,
    every process's embeddings in the loss. sync_batchnorm: then normalise each batch norm layer
    with the statistics of the whole gathered batch, as one process holding it would (True; GPUs
    only: torch's SyncBatchNorm has no CPU implementation), not with each process's share (False,
    Lightning's default: cheaper, but the embeddings of different processes then carry different
    statistics, which a contrastive loss can learn to tell apart).
    """

    data: str = ""
    out: str = "runs/pretrain"
    image_arch: str = "resnet18"
    audio_arch: str = "resnet18"
    embed_dim: int = 128
    loss: str = "batch_all_triplet"
    margin: float = 1.0
    tau: float = 0.2
    batch_size: int = 32
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    image_size: int = 192
    crop: float = 0.375
    gsd: float = 0.0
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    audio_source: str = "spectrogram"
    n_mels: int = 128
    chunk_frames: int = 128
    augment: str = "ours"
    num_workers: int = 2
    devices: int = 1
    num_nodes: int = 1
    sync_batchnorm: bool = False
    accelerator: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    seed: int = 0
    threads: int = 0
    max_minutes: float = 0.0
    checkpoint_every: int = 0
    resume: str = ""
    limit_train_batches: float = 1.0
    preset: str = "ours"
    optimizer: str = "adamw"
    schedule: str = "cosine"
    stem_width: int = 0
    widths: list[int] | None = None
    head_init: str = "ours"
    bundle_from: str = "best"

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):  # configs written before augment had kinds
            self.augment = "ours" if self.augment else "none"
        for name, allowed in (("preset", tuple(PRESETS)), ("loss", (*LOSS_NAMES, "published_batch_all_triplet")),
                              ("optimizer", OPTIMIZERS),
                              ("schedule", SCHEDULES), ("augment", AUGMENTATIONS), ("head_init", HEAD_INITS),
                              ("bundle_from", BUNDLE_FROM)):
            if getattr(self, name) not in allowed:
                fail(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.widths is not None:
            self.widths = [int(w) for w in self.widths]
        if int(self.stem_width) < 0 or (self.widths is not None and (len(self.widths) != 4 or min(self.widths) < 1)):
            fail(f"stem_width must be >= 0 (0: the arch's) and widths 4 positive integers, "
                 f"got {self.stem_width} and {self.widths}")
        from model.train.trainer import world_size

        world_size(self.devices, self.num_nodes)  # one line for a count below 1, before anything runs

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PretrainConfig":
        """The config of a YAML file: its preset's values (if it names one), then the file's."""
        return resolve_config(read_config_file(path))

    @classmethod
    def from_preset(cls, preset: str = "ours", **values: Any) -> "PretrainConfig":
        """``preset``'s values, overridden by ``values``."""
        return resolve_config(values, preset=preset)

    def encoder_spec(self, arch: str, in_channels: int):
        """The EncoderSpec of an encoder of this run: ``arch`` with ``stem_width`` and ``widths``."""
        from model.nn.encoders import EncoderSpec

        spec = EncoderSpec.from_arch(arch, in_channels=in_channels, embed_dim=self.embed_dim)
        changes = {"stem_width": int(self.stem_width)} if self.stem_width else {}
        if self.widths is not None:
            changes["widths"] = tuple(self.widths)
        return spec.replace(**changes) if changes else spec

    def settings(self) -> dict[str, Any]:
        """What shaped the trained weights, for the bundle's provenance (no paths, nothing per machine)."""
        keys = ("preset", "optimizer", "schedule", "lr", "weight_decay", "batch_size", "epochs", "loss",
                "augment", "head_init", "bundle_from", "image_size", "crop", "embed_dim", "seed",
                "limit_train_batches")
        return {**{k: getattr(self, k) for k in keys}, **self.loss_kwargs()}

    def loss_kwargs(self) -> dict[str, Any]:
        return {"tau": self.tau} if self.loss == "contrastive" else {"margin": self.margin}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options of a YAML config file; one CLIError line when unreadable or naming unknown keys."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CLIError(f"{path}: cannot read config ({one_line(e)})") from None
    if not isinstance(data, dict):
        fail(f"{path}: a config file holds option: value lines, got {type(data).__name__}")
    unknown = set(data) - {f.name for f in fields(PretrainConfig)}
    if unknown:
        fail(f"{path}: unknown config keys {sorted(unknown)}")
    return data


def resolve_config(values: dict[str, Any], flags: dict[str, Any] | None = None,
                   preset: str | None = None) -> PretrainConfig:
    """The config of a run: the preset's values (``preset``, else the one ``flags`` or ``values`` name,
    else ``ours``), then ``values`` (a config file's), then the ``flags`` that are not None."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    name = preset or flags.get("preset") or values.get("preset") or "ours"
    if name not in PRESETS:
        fail(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return PretrainConfig(**{**PRESETS[name], **values, **flags, "preset": name})


def run_audio_config(cfg: PretrainConfig):
    """The AudioConfig a run trains on and its bundle records: the defaults with ``cfg.n_mels`` mel
    bands and ``cfg.chunk_frames`` frames per chunk. One CLIError line for a size out of range or one
    the audio source cannot give (:func:`~model.data.soundingearth.check_audio_source`)."""
    from model.bundle.audio import AudioConfig, AudioError
    from model.data.errors import DatasetError
    from model.data.soundingearth import check_audio_source

    try:
        config = AudioConfig(n_mels=int(cfg.n_mels), chunk_frames=int(cfg.chunk_frames))
        check_audio_source(cfg.data, cfg.audio_source, config)
    except AudioError as e:
        fail(f"audio input: {one_line(e)}")
    except DatasetError as e:
        fail(one_line(e))
    return config


def _datamodule(cfg: PretrainConfig, image_input: ImageInput, audio_config):
    from model.data.datamodule import SoundingEarthDataModule

    return SoundingEarthDataModule(
        root=cfg.data, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
        image_input=image_input, crop=cfg.crop, audio_source=cfg.audio_source,
        audio_config=audio_config, augment=cfg.augment, seed=cfg.seed,
    )


def _trainer(cfg: PretrainConfig, out: Path):
    """The run's Trainer (DDP over ``cfg.devices`` x ``cfg.num_nodes`` processes) and its ``best.ckpt``
    callback (lowest val_loss)."""
    from model.train.trainer import best_checkpoint, build_trainer, last_checkpoints

    best = best_checkpoint(out, monitor="val_loss")
    trainer = build_trainer(
        out, epochs=cfg.epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        sync_batchnorm=cfg.sync_batchnorm, precision=cfg.precision,
        callbacks=[last_checkpoints(out, every=cfg.checkpoint_every), best], max_minutes=cfg.max_minutes,
        limit_train_batches=cfg.limit_train_batches,
    )
    return trainer, best


def tile_gsd(cfg: PretrainConfig, data: Path) -> float:
    """Metres per pixel of the tiles the encoder saw: source gsd x crop x image side / input size.

    The source gsd comes from ``--gsd`` (taken as the encoder input's gsd directly) or from a
    ``gsd`` column of metadata.csv (metres per pixel of the images, as model.synth writes it).
    """
    if cfg.gsd > 0:
        return cfg.gsd
    import pandas as pd
    from PIL import Image

    table = pd.read_csv(data / "metadata.csv", usecols=lambda c: c in ("key", "gsd"))
    if "gsd" not in table.columns:
        fail(f"{data}: metadata.csv has no gsd column; pass --gsd (metres per pixel of the encoder input)")
    first = next(p for p in sorted((data / "images").iterdir())
                 if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith("."))  # not temp files
    with Image.open(first) as im:
        side = im.size[0]
    return float(table["gsd"].median()) * cfg.crop * side / cfg.image_size


def run_image_input(cfg: PretrainConfig) -> ImageInput:
    """The encoder input a run trains on and its bundle records: ``cfg.image_size`` px at
    :func:`tile_gsd` metres per pixel, normalised with ``cfg.image_mean`` / ``cfg.image_std``
    (``ImageInput``'s defaults where unset)."""
    stats = {name: tuple(float(v) for v in values)
             for name, values in (("mean", cfg.image_mean), ("std", cfg.image_std)) if values}
    gsd = tile_gsd(cfg, Path(cfg.data))
    try:
        return ImageInput(tile_size=cfg.image_size, gsd=gsd, **stats,
                          note=f"centre crop {cfg.crop:g} of each image, resized to {cfg.image_size} px")
    except ValueError as e:
        fail(f"image input: {one_line(e)}")


def write_bundle(model, cfg: PretrainConfig, out: Path, provenance: dict[str, Any],
                 image_input: ImageInput | None = None):
    """Write ``out`` as a bundle from a trained AudioVisualModel; ``image_input`` is the input it
    was trained on (default :func:`run_image_input`), its audio input :func:`run_audio_config`."""
    import model.bundle as bundle_mod

    image_input = image_input or run_image_input(cfg)
    meta = bundle_mod.make_meta(
        image_spec=model.image_encoder.spec, audio_spec=model.audio_encoder.spec, distance=model.distance,
        image_input=image_input, audio_config=run_audio_config(cfg), provenance=provenance,
    )
    tensors = {**bundle_mod.encoder_tensors("image_encoder", model.image_encoder),
               **bundle_mod.encoder_tensors("audio_encoder", model.audio_encoder)}
    return bundle_mod.save(out, meta, tensors, overwrite=True)


def _best_state(model, best_path: str) -> None:
    import torch

    if best_path and Path(best_path).is_file():
        state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)


def resume_checkpoint(resume: str, out: Path) -> str | None:
    """The checkpoint to resume from (``last``: ``out/checkpoints/last.ckpt``), checked before training
    starts: a file that is missing, empty, truncated, not a checkpoint, carrying code
    (:func:`~model.nn.checkpoint_file.load_checkpoint`) or not a Lightning training checkpoint is
    one CheckpointError line naming it. None when not resuming."""
    if not resume:
        return None
    path = out / "checkpoints" / "last.ckpt" if resume in ("last", "true", "True") else Path(resume)
    state = load_checkpoint(path, max_bytes=None)
    if not isinstance(state, dict) or not {"state_dict", "loops"} <= state.keys():
        raise CheckpointError(f"{path}: not a training checkpoint of model.pretrain (no state_dict and loops)")
    return str(path)


def run(cfg: PretrainConfig) -> Path:
    """Train, then write ``<out>/bundle``; returns the bundle path.

    Under DDP every process runs this (Lightning's launcher re-runs the command with ``LOCAL_RANK``
    set, and every node runs it): all of them train, global rank 0 alone writes ``config.yaml``, the
    checkpoints, the logs, ``training.json`` and the bundle; the others return the bundle's path
    without writing it."""
    import torch

    from model.train.audiovisual import AudioVisualModel
    from model.train.determinism import make_deterministic
    from model.train.run_record import run_record, write_training_record
    from model.train.trainer import world_size

    data, out = Path(cfg.data), Path(cfg.out)
    if not data.is_dir():
        fail(f"{data}: no such data folder")
    resume = resume_checkpoint(cfg.resume, out)
    audio_config = run_audio_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    image_input = run_image_input(cfg)  # fails early when the ground sample distance is unknown
    if cfg.threads and world_size(cfg.devices, cfg.num_nodes) > 1:
        # Lightning's DDP launcher sets torch's thread count to cores / processes unless
        # OMP_NUM_THREADS is set; this keeps the run's --threads (and passes it to the processes it starts)
        os.environ["OMP_NUM_THREADS"] = str(int(cfg.threads))
    determinism = make_deterministic(cfg.seed, cfg.threads)
    try:
        specs = {"image_spec": cfg.encoder_spec(cfg.image_arch, 3).to_dict(),
                 "audio_spec": cfg.encoder_spec(cfg.audio_arch, 1).to_dict()}
    except ValueError as e:
        fail(one_line(e))
    model = AudioVisualModel(
        **specs, loss=cfg.loss, loss_kwargs=cfg.loss_kwargs(), lr=cfg.lr, weight_decay=cfg.weight_decay,
        epochs=cfg.epochs, channels_last=cfg.channels_last, optimizer=cfg.optimizer, schedule=cfg.schedule,
        head_init=cfg.head_init,
    )
    trainer, best = _trainer(cfg, out)  # from here on the process knows its rank
    if cfg.sync_batchnorm and trainer.world_size > 1 and trainer.strategy.root_device.type != "cuda":
        fail(f"sync_batchnorm needs GPUs (torch's SyncBatchNorm has no {trainer.strategy.root_device.type} "
             f"implementation); train without it")
    if trainer.global_rank == 0:  # every process of every node runs this function: one writes the run's files
        (out / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    started = time.time()
    trainer.fit(model, datamodule=_datamodule(cfg, image_input, audio_config), ckpt_path=resume or None)
    if trainer.global_rank != 0:
        return out / "bundle"
    if cfg.bundle_from == "best":
        _best_state(model, best.best_model_path)
    determinism = {**determinism, "threads": torch.get_num_threads()}  # under DDP, as Lightning's launcher left it
    record = {**run_record(trainer, cfg.epochs, determinism), "world_size": int(trainer.world_size),
              "sync_batchnorm": bool(cfg.sync_batchnorm and trainer.world_size > 1)}
    provenance = {  # no wall-clock figures: the same command gives the same bytes
        "trained_by": "geoaudio model.train.pretrain", "data": str(data.resolve()), "loss": cfg.loss,
        **record, "precision": str(trainer.precision),
        "best_val_loss": float(best.best_model_score) if best.best_model_score is not None else None,
        "preset": cfg.preset, "settings": cfg.settings(),
    }
    write_training_record(out, {**record, "best_val_loss": provenance["best_val_loss"]}, time.time() - started)
    bundle = write_bundle(model.cpu(), cfg, out / "bundle", provenance, image_input)
    print(f"bundle written to {bundle.path}")
    return bundle.path
