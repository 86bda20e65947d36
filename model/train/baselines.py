"""``python -m model.baselines simclr|moco --data DIR --epochs N --out RUN``: image-only baselines.

Self-supervised pretraining of the same image ResNet on the same imagery (the ``train`` split of a
SoundingEarth-format folder; the audio is not used) with the same budget as ``model.train.pretrain``
(epochs, batch size, AdamW learning rate with cosine decay), so that the downstream tables compare
what the audio adds against what the images alone give. Losses, heads and augmentations are
lightly's:

- ``simclr``: two views per image from ``SimCLRTransform``; z = SimCLRProjectionHead(h) with
  h = mean-pooled backbone features; NT-Xent loss
  ``l(i, j) = -log exp(cos(z_i, z_j)/T) / sum_{k != i} exp(cos(z_i, z_k)/T)`` over the 2N views;
- ``moco``: MoCo v2 — a query view through backbone + MoCoProjectionHead, a key view through
  their momentum copies (``update_momentum``: theta_m <- m theta_m + (1 - m) theta, m rising from
  ``--momentum`` to 1 on a cosine schedule), NT-Xent against a memory bank of ``--memory-bank``
  past keys (``MoCoV2Transform`` views).

Views are drawn from the centred ``--train-crop`` fraction of each image (as model.train.pretrain draws
its crops) at ``--image-size`` px; vertical flips and 90-degree rotations are added, since aerial
images have no "up"; they are normalised with the run's image input (``--image-mean``,
``--image-std``, ImageNet's by default), which the bundle records. Nothing is downloaded.

The budget is ``--epochs``; ``--max-minutes`` is only a safety stop that marks the run truncated
(:mod:`model.train.safety_stop`); the run is seeded and deterministic with ``--threads`` intra-op
threads (:mod:`model.train.determinism`).

Writes ``RUN/checkpoints/last.ckpt``, ``RUN/logs/``, ``RUN/training.json`` (:mod:`model.train.run_record`)
and ``RUN/bundle`` (image encoder only, distance cosine). The bundle's ``fc`` is the identity, so its embedding is the mean-pooled
backbone feature (512 values for resnet18) — the representation these methods are evaluated on —
and the run folder works as ``--init`` for ``model.finetune``.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from model.data.workers import worker_init
from model.bundle.image_input import ImageInput
from model.core.cli import fail
from model.data.datamodule import loader_generator
from model.data.bad_items import LeftOut, problem_of
from model.data.errors import DatasetError, UnreadableItemError
from model.data.transforms import EVAL_CROP, TRAIN_CROP
from model.nn.encoders import EncoderSpec, ResNetEncoder
from model.train.determinism import make_deterministic
from model.train.run_record import run_record, write_training_record

METHODS = ("simclr", "moco")
DEFAULT_TEMPERATURE = {"simclr": 0.5, "moco": 0.2}


@dataclass
class BaselineConfig:
    """A baseline run (pixels, metres per pixel; see ``--help`` for each field)."""

    method: str = "simclr"
    data: str = ""
    out: str = "runs/simclr"
    arch: str = "resnet18"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    image_size: int = 192
    crop: float = EVAL_CROP
    train_crop: float = TRAIN_CROP
    gsd: float = 0.0
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    temperature: float = 0.0
    proj_dim: int = 128
    memory_bank: int = 4096
    momentum: float = 0.99
    num_workers: int = 2
    accelerator: str = "auto"
    precision: str = "auto"
    seed: int = 0
    threads: int = 0
    max_minutes: float = 0.0
    limit_train_batches: float = 1.0

    def loss_temperature(self) -> float:
        return self.temperature if self.temperature > 0 else DEFAULT_TEMPERATURE[self.method]


def train_image_paths(root: str | Path, split: str = "train") -> list[Path]:
    """Image files ``images/{key}.*`` of the keys of ``split`` in ``metadata.csv`` (key-mod-10 scheme)."""
    from model.data.metadata import IMAGE_DIR, IMAGE_SUFFIXES, files_by_key, read_metadata
    from model.data.splits import select_split

    root = Path(root)
    images = files_by_key(root / IMAGE_DIR, IMAGE_SUFFIXES)
    keys = [k for k in select_split(read_metadata(root)["key"], split) if k in images]
    if not keys:
        raise DatasetError(f"{root}: no {split} keys with an image in {IMAGE_DIR}/")
    return [images[k] for k in keys]


class TwoViewImages(Dataset):
    """Two augmented views (a list of two (3, S, S) tensors) of the centred ``region`` fraction of each
    image. An unreadable image is reported once (``left_out``, in this process) and the next readable
    one stands in, so one bad file does not stop a run (:mod:`model.data.bad_items`)."""

    def __init__(self, paths: list[Path], transform: Callable, region: float) -> None:
        self.paths = paths
        self.transform = transform
        self.region = region
        self.left_out = LeftOut()
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> list[Tensor]:
        for step in range(len(self.paths)):
            i = (index + step) % len(self.paths)
            try:
                return self._views(self.paths[i])
            except UnreadableItemError as e:
                if i not in self._bad:
                    self._bad.add(i)
                    self.left_out.add(self.paths[i], problem_of(e, self.paths[i]))
        raise DatasetError(f"none of the {len(self.paths)} images is readable")

    def _views(self, path: Path) -> list[Tensor]:
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise UnreadableItemError(f"{path}: corrupt image ({str(e).strip() or type(e).__name__})") from None
        w, h = image.size
        side = max(1, round(self.region * min(w, h)))
        left, top = (w - side) // 2, (h - side) // 2
        return self.transform(image.crop((left, top, left + side, top + side)))


def make_transform(method: str, image_input: ImageInput) -> Callable:
    """lightly's view pair transform for ``method`` at ``image_input.tile_size`` px, normalised with
    its mean and std, with vertical flips and 90-degree rotations for aerial imagery."""
    from lightly.transforms import MoCoV2Transform, SimCLRTransform

    kind = SimCLRTransform if method == "simclr" else MoCoV2Transform
    normalize = {"mean": list(image_input.mean), "std": list(image_input.std)}
    return kind(input_size=image_input.tile_size, vf_prob=0.5, hf_prob=0.5, rr_prob=0.5, normalize=normalize)


def run_image_input(cfg: BaselineConfig) -> ImageInput:
    """The encoder input the run trains on and its bundle records (as model.train.pretrain's)."""
    from model.train.pretrain import PretrainConfig, run_image_input as pretrain_input

    return pretrain_input(PretrainConfig(data=cfg.data, crop=cfg.crop, image_size=cfg.image_size, gsd=cfg.gsd,
                                         image_mean=cfg.image_mean, image_std=cfg.image_std))


class ImageSSL(L.LightningModule):
    """Common part: a ResNet backbone h(x) = mean_hw features(x), AdamW with cosine decay."""

    def __init__(self, spec: dict[str, Any], lr: float, weight_decay: float, epochs: int) -> None:
        super().__init__()
        self.backbone = ResNetEncoder(EncoderSpec.from_dict(spec))
        self.feature_dim = self.backbone.spec.feature_dim
        self.lr, self.weight_decay, self.epochs = lr, weight_decay, epochs

    @staticmethod
    def pooled(backbone: ResNetEncoder, x: Tensor) -> Tensor:
        return backbone.features(x).mean(dim=(2, 3))

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


class SimCLR(ImageSSL):
    """SimCLR: NT-Xent between the projections of two views of each image."""

    def __init__(self, spec: dict[str, Any], lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 10,
                 temperature: float = 0.5, proj_dim: int = 128) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__(spec, lr, weight_decay, epochs)
        self.head = SimCLRProjectionHead(self.feature_dim, self.feature_dim, proj_dim)
        self.loss_fn = NTXentLoss(temperature=temperature)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        x0, x1 = batch
        z0 = self.head(self.pooled(self.backbone, x0))
        z1 = self.head(self.pooled(self.backbone, x1))
        loss = self.loss_fn(z0.float(), z1.float())
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x0))
        return loss


class MoCo(ImageSSL):
    """MoCo v2: queries against momentum-encoded keys and a memory bank of past keys."""

    def __init__(self, spec: dict[str, Any], lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 10,
                 temperature: float = 0.2, proj_dim: int = 128, memory_bank: int = 4096,
                 momentum: float = 0.99) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__(spec, lr, weight_decay, epochs)
        self.head = MoCoProjectionHead(self.feature_dim, self.feature_dim, proj_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.head_momentum = copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.loss_fn = NTXentLoss(temperature=temperature, memory_bank_size=(memory_bank, proj_dim))
        self.momentum = momentum

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        total = max(1, int(self.trainer.estimated_stepping_batches))
        m = cosine_schedule(self.global_step, total, self.momentum, 1.0)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.head, self.head_momentum, m)
        x_query, x_key = batch
        query = self.head(self.pooled(self.backbone, x_query))
        with torch.no_grad():
            key = self.head_momentum(self.pooled(self.backbone_momentum, x_key))
        loss = self.loss_fn(query.float(), key.float())
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x_query))
        self.log("momentum", m, on_step=True, on_epoch=False)
        return loss


def build_model(cfg: BaselineConfig) -> ImageSSL:
    """The LightningModule of ``cfg.method`` with a freshly initialised ``cfg.arch`` backbone."""
    spec = EncoderSpec.from_arch(cfg.arch, in_channels=3).to_dict()
    common = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                  temperature=cfg.loss_temperature(), proj_dim=cfg.proj_dim)
    if cfg.method == "simclr":
        return SimCLR(spec, **common)
    return MoCo(spec, **common, memory_bank=cfg.memory_bank, momentum=cfg.momentum)


def write_bundle(backbone: ResNetEncoder, cfg: BaselineConfig, out: Path, provenance: dict[str, Any],
                 image_input: ImageInput | None = None):
    """``out`` as an image-only bundle: the backbone with an identity ``fc`` (embedding = pooled
    features); ``image_input``: the input it was trained on (default :func:`run_image_input`)."""
    import model.bundle as bundle_mod

    dim = backbone.spec.feature_dim
    encoder = ResNetEncoder(backbone.spec.replace(embed_dim=dim))
    state = {**backbone.backbone_state_dict(), "fc.weight": torch.eye(dim), "fc.bias": torch.zeros(dim)}
    encoder.load_state_dict(state, strict=True)
    image_input = image_input or run_image_input(cfg)
    meta = bundle_mod.make_meta(image_spec=encoder.spec, distance="cosine", image_input=image_input,
                                provenance=provenance)
    return bundle_mod.save(out, meta, bundle_mod.encoder_tensors("image_encoder", encoder), overwrite=out.exists())


def _loader(cfg: BaselineConfig, paths: list[Path], image_input: ImageInput) -> DataLoader:
    dataset = TwoViewImages(paths, make_transform(cfg.method, image_input), cfg.train_crop)
    if len(dataset) < 2:
        fail(f"{cfg.data}: needs at least two training images for contrastive pairs, found {len(dataset)}")
    return DataLoader(dataset, batch_size=min(cfg.batch_size, len(dataset)), shuffle=True, drop_last=True,
                      num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                      worker_init_fn=worker_init if cfg.num_workers > 0 else None, generator=loader_generator(cfg.seed))


def _trainer(cfg: BaselineConfig, out: Path) -> L.Trainer:
    """One device, ``out/checkpoints/last.ckpt`` after every epoch, logs in ``out/logs``."""
    from model.train.trainer import build_trainer, last_checkpoints

    return build_trainer(out, epochs=cfg.epochs, accelerator=cfg.accelerator, precision=cfg.precision,
                         callbacks=[last_checkpoints(out)], max_minutes=cfg.max_minutes,
                         limit_train_batches=cfg.limit_train_batches)


def run(cfg: BaselineConfig) -> Path:
    """Train, then write ``<out>/bundle``; returns the bundle path."""
    import yaml

    data, out = Path(cfg.data), Path(cfg.out)
    if cfg.method not in METHODS:
        fail(f"unknown method {cfg.method!r} (known: {', '.join(METHODS)})")
    if not data.is_dir():
        fail(f"{data}: no such data folder")
    if cfg.epochs < 1:
        fail(f"--epochs must be at least 1, got {cfg.epochs}")
    image_input = run_image_input(cfg)  # fails early when the ground sample distance is unknown
    paths = train_image_paths(data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    determinism = make_deterministic(cfg.seed, cfg.threads)
    model = build_model(cfg)
    trainer = _trainer(cfg, out)
    started = time.time()
    trainer.fit(model, train_dataloaders=_loader(cfg, paths, image_input))
    loss = trainer.callback_metrics.get("train_loss_epoch")
    record = run_record(trainer, cfg.epochs, determinism)
    provenance = {"trained_by": f"geoaudio model.train.baselines {cfg.method}", "method": cfg.method,
                  "data": str(data.resolve()), "images": len(paths), **record,
                  "temperature": cfg.loss_temperature(), "final_train_loss": float(loss) if loss is not None else None}
    write_training_record(out, {**record, "final_train_loss": provenance["final_train_loss"]}, time.time() - started)
    bundle = write_bundle(model.backbone.cpu(), cfg, out / "bundle", provenance, image_input)
    print(f"bundle written to {bundle.path}")
    return bundle.path
