"""Scene classification on folder-per-class datasets (UC Merced, AID, NWPU-RESISC45).

Model: the ResNet backbone with a linear head, i.e. a :class:`~model.nn.encoders.ResNetEncoder` whose
``fc`` maps the pooled features to K class logits: ``logits = W mean_hw(features(x)) + b``.
Training minimises the cross-entropy with AdamW and a cosine learning-rate decay over the
epochs; with ``freeze`` only the head learns (a linear probe; BatchNorm statistics stay fixed).

Inputs: the centred square of each image resized to the ``image_input``'s tile size (antialiased
bilinear) and normalised with its mean and std (the init bundle's; ImageNet's otherwise);
training draws :class:`~model.data.transforms.TrainAugment` (random resized crop of 50-100 % of
the area, dihedral symmetry, small rotation, colour jitter) instead.

Scores on the test split: confusion ``C[i, j]`` = test images of class i predicted as j;
``accuracy = trace(C) / sum(C)``; per-class accuracy ``C[i, i] / sum_j C[i, j]`` (recall).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from model.data.workers import worker_init
from model.core.atomic import write_atomic
from model.bundle.image_input import ImageInput
from model.data.transforms import centre_region, image_transform, read_image
from model.nn.encoders import ResNetEncoder
from model.data.folder_datasets import LabelledImages


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> np.ndarray:
    """C (K, K) int64 with ``C[i, j]`` = samples of true class i predicted j; targets equal to
    ``ignore_index`` (or outside 0..K-1) are not counted."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    index = target[keep] * num_classes + np.clip(pred[keep], 0, num_classes - 1)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy_scores(confusion: np.ndarray) -> tuple[float, list[float | None]]:
    """(overall accuracy trace(C)/sum(C), per-class accuracy C[i,i]/sum_j C[i,j]; None for an
    absent class)."""
    c = np.asarray(confusion, dtype=np.float64)
    total = c.sum()
    overall = float(np.trace(c) / total) if total else float("nan")
    rows = c.sum(axis=1)
    per_class = [float(c[i, i] / rows[i]) if rows[i] else None for i in range(len(c))]
    return overall, per_class


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Save the row-normalised confusion matrix (counts in the cells) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(confusion, dtype=np.float64)
    rates = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    side = min(16.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if c[i, j]:
                    ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion (rows: true class)")
    fig.tight_layout()
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return Path(path)


class ClassImageDataset(Dataset):
    """(image (3, S, S) float32, label) pairs from image paths, made for the encoder input
    ``image_input`` (S = its tile size; its mean and std); augmented when ``augment``.

    Random parameters come from ``np.random.default_rng([seed, index, draw, torch seed])``: the draw
    counter and the per-worker torch seed make every epoch's augmentation different yet repeatable.
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], image_input: ImageInput, augment: bool,
                 seed: int = 0) -> None:
        self.paths = list(paths)
        self.labels = [int(v) for v in labels]
        self.transform = image_transform(image_input, augment)
        self.augment = augment
        self.seed = seed
        self._draws = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        region = centre_region(read_image(self.paths[index]), 1.0)
        rng = None
        if self.augment:
            self._draws += 1
            rng = np.random.default_rng([self.seed, index, self._draws, torch.initial_seed() % 2**32])
        return self.transform(region, rng), self.labels[index]


class SceneDataModule(L.LightningDataModule):
    """Train (shuffled; augmented unless ``augment`` is False) and test (evaluation transform)
    loaders over one split, made for the encoder input ``image_input`` (default ``ImageInput()``)."""

    def __init__(self, data: LabelledImages, train_idx: np.ndarray, test_idx: np.ndarray,
                 image_input: ImageInput | None = None, batch_size: int = 32, num_workers: int = 2,
                 seed: int = 0, augment: bool = True) -> None:
        super().__init__()
        image_input = image_input or ImageInput()
        self.train_set = ClassImageDataset([data.paths[i] for i in train_idx], data.labels[train_idx],
                                           image_input, augment=augment, seed=seed)
        self.test_set = ClassImageDataset([data.paths[i] for i in test_idx], data.labels[test_idx],
                                          image_input, augment=False, seed=seed)
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        drop = shuffle and len(dataset) > self.batch_size  # no 1-sample batch for BatchNorm
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=drop,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          worker_init_fn=worker_init if self.num_workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


class ProjectionClassifier(nn.Module):
    """The reference protocol's classifier: the encoder with its projection kept, then a linear layer.

    ``z = W_p mean_hw(f(x)) + b_p`` (the bundle's ``fc``, D outputs), ``z / ||z||_2`` when the
    bundle compares embeddings by cosine (the loss's distance transform), then
    ``logits = W z + b`` (K outputs; :attr:`head`).
    """

    def __init__(self, encoder: ResNetEncoder, num_classes: int, normalise: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalise = normalise
        self.head = nn.Linear(encoder.spec.embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        if self.normalise:
            z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True)
        return self.head(z)


class SceneClassifier(L.LightningModule):
    """A classifier trained with cross-entropy: a ResNetEncoder whose ``fc`` outputs class logits
    (our protocol; head ``fc``) or a :class:`ProjectionClassifier` (the reference's; head ``head``).

    schedule: ``cosine`` (AdamW with ``weight_decay``, cosine decay over the epochs) or
    ``constant`` (Adam at ``lr``, no decay, as the reference). ``trainer.test`` accumulates the
    confusion matrix in ``self.confusion`` (K, K).
    """

    def __init__(self, encoder: nn.Module, lr: float = 5e-4, weight_decay: float = 1e-4,
                 epochs: int = 10, freeze: bool = False, schedule: str = "cosine") -> None:
        super().__init__()
        self.encoder = encoder
        self.head_name = "head" if isinstance(encoder, ProjectionClassifier) else "fc"
        self.num_classes = getattr(encoder, self.head_name).out_features
        self.lr, self.weight_decay, self.epochs, self.freeze = lr, weight_decay, epochs, freeze
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant, got {schedule!r}")
        self.schedule = schedule
        self.loss_fn = nn.CrossEntropyLoss()
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        if freeze:
            for name, p in self.encoder.named_parameters():
                p.requires_grad_(name.startswith(f"{self.head_name}."))
        self.train()  # Lightning keeps the modes it finds at the start of fit

    def train(self, mode: bool = True) -> "SceneClassifier":
        """Like nn.Module.train, but a frozen backbone keeps its BatchNorm layers in eval mode."""
        super().train(mode)
        if self.freeze:
            for name, m in self.encoder.named_modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith(self.head_name):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = self.loss_fn(self(images).float(), labels)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels))
        return loss

    def on_test_epoch_start(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        pred = self(images).argmax(dim=1)
        self.confusion += confusion_matrix(pred.cpu().numpy(), labels.cpu().numpy(), self.num_classes)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.schedule == "constant":
            return torch.optim.Adam(params, lr=self.lr)
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}
