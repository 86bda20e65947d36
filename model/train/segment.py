"""Land-cover segmentation on the DeepGlobe Land Cover layout with a DeepLabV3+ head.

Model: ``model.nn.landcover.build_segmenter`` (segmentation_models_pytorch DeepLabV3+) whose encoder
is the pretrained ResNet backbone of any width (torchvision names, loaded without renaming; smp's
own ResNet for a standard resnet18/resnet50, else one built from the init's spec); six output classes
(urban, agriculture, rangeland, forest, water, barren). Pixels of DeepGlobe's "unknown" colour
carry :data:`~model.data.folder_datasets.IGNORE_INDEX` and count neither in the loss nor in the scores.

Training: random ``crop_size`` px crops of the tiles at native resolution, a random dihedral
symmetry, pixel-wise cross-entropy, AdamW with cosine decay. Images are normalised with the mean and
std of the init's image input (the init bundle's; ImageNet's otherwise).

Evaluation: each whole test tile is predicted by a sliding window (``window`` px, step ``stride``
px); logits of overlapping windows are averaged. With confusion ``C[i, j]`` = labelled pixels of
class i predicted j: overall accuracy ``OA = trace(C) / sum(C)``,
``IoU_k = C[k, k] / (sum_j C[k, j] + sum_i C[i, k] - C[k, k])`` and ``mIoU`` = mean of the IoUs of
the classes that occur in the labels or the predictions.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from model.data.workers import worker_init
from model.bundle.encoder_spec import EncoderSpec
from model.bundle.image_input import ImageInput
from model.train.classify import confusion_matrix
from model.data.errors import DatasetError
from model.data.transforms import TrainAugment, normalise, read_image
from model.data.folder_datasets import DEEPGLOBE_CLASSES, DEEPGLOBE_COLOURS, IGNORE_INDEX, SegmentationTile, read_mask


def segmentation_scores(confusion: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Overall accuracy, mIoU and per-class IoU (None for a class absent from labels and predictions)."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    union = c.sum(axis=1) + c.sum(axis=0) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    total = c.sum()
    return {
        "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(classes, iou)},
    }


def reference_scores(confusion: np.ndarray, tile_accuracy: Sequence[float]) -> dict[str, float]:
    """The reference protocol's DeepGlobe scores: ``OA`` the mean over test tiles of each tile's
    accuracy (its labelled pixels predicted right / its labelled pixels), and ``mIoU`` the mean of
    ``IoU_k`` over all K classes, a class absent from labels and predictions counting as 0/0 = NaN
    (so the mean is NaN then, as the reference's)."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    union = c.sum(axis=1) + c.sum(axis=0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
    return {"overall_accuracy_mean_of_tiles": float(np.mean(tile_accuracy)) if len(tile_accuracy) else float("nan"),
            "miou_all_classes": float(np.mean(iou))}


def whole_tile_window(shape: Sequence[int], multiple: int = 32) -> int:
    """The side in px of one window covering a whole (H, W) tile: ``max(H, W)`` rounded up to a
    multiple of ``multiple`` (the segmenter's input constraint); the tile is padded to it."""
    return int(-(-max(int(shape[0]), int(shape[1])) // multiple) * multiple)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets 0, stride, 2 stride, ... of windows covering ``length`` px; the last one is
    moved back to ``length - window`` so that it ends exactly at the border (needs length >= window)."""
    if length < window or stride < 1:
        raise ValueError(f"cannot tile {length} px with {window} px windows and stride {stride}")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


@torch.no_grad()
def sliding_window_logits(model: nn.Module, image: Tensor, window: int, stride: int, batch_size: int = 8) -> Tensor:
    """Logits (N, K, H, W) of a whole image (N, 3, H, W): the mean of the model's logits over every
    ``window`` x ``window`` px window (step ``stride`` px) that covers a pixel.

    An image smaller than a window is padded on the bottom/right with zeros (the mean colour after
    normalisation) and the padding cropped off again.
    """
    n, _, h, w = image.shape
    ph, pw = max(h, window), max(w, window)
    x = F.pad(image, (0, pw - w, 0, ph - h))
    boxes = [(top, left) for top in window_starts(ph, window, stride) for left in window_starts(pw, window, stride)]
    total: Tensor | None = None
    count = torch.zeros(1, 1, ph, pw, device=image.device)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        crops = torch.cat([x[:, :, t:t + window, l:l + window] for t, l in chunk])
        out = model(crops).float()
        if total is None:
            total = torch.zeros(n, out.shape[1], ph, pw, device=image.device)
        for j, (t, l) in enumerate(chunk):
            total[:, :, t:t + window, l:l + window] += out[j * n:(j + 1) * n]
            count[:, :, t:t + window, l:l + window] += 1
    return (total / count)[:, :, :h, :w]


def read_tile(tile: SegmentationTile) -> tuple[Tensor, Tensor]:
    """(image uint8 (3, H, W), class ids uint8 (H, W)); DatasetError when the sizes differ."""
    image = read_image(tile.image)
    mask = torch.from_numpy(read_mask(tile.mask))
    if tuple(image.shape[1:]) != tuple(mask.shape):
        raise DatasetError(f"{tile.mask}: mask is {tuple(mask.shape)} px, image {tile.image.name} is "
                           f"{tuple(image.shape[1:])} px")
    return image, mask


class TileCrops(Dataset):
    """``crops_per_tile`` random ``crop_size`` px crops per tile and epoch: (image (3, c, c) float32
    normalised with ``image_input``'s mean and std, mask (c, c) int64). Tiles smaller than a crop
    are padded (mask: ignored)."""

    def __init__(self, tiles: Sequence[SegmentationTile], crop_size: int, crops_per_tile: int = 1, seed: int = 0,
                 image_input: ImageInput | None = None) -> None:
        self.tiles = list(tiles)
        self.image_input = image_input or ImageInput()
        self.crop_size = crop_size
        self.crops_per_tile = crops_per_tile
        self.seed = seed
        self._draws = 0

    def __len__(self) -> int:
        return len(self.tiles) * self.crops_per_tile

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        self._draws += 1
        rng = np.random.default_rng([self.seed, index, self._draws, torch.initial_seed() % 2**32])
        image, mask = read_tile(self.tiles[index // self.crops_per_tile])
        stack = torch.cat([image, mask[None]])
        c = self.crop_size
        h, w = stack.shape[1:]
        if h < c or w < c:
            pad = torch.zeros(4, max(h, c), max(w, c), dtype=torch.uint8)
            pad[3] = IGNORE_INDEX
            pad[:, :h, :w] = stack
            stack, h, w = pad, pad.shape[1], pad.shape[2]
        top, left = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        stack = TrainAugment.random_dihedral(stack[:, top:top + c, left:left + c], rng)
        return normalise(stack[:3], self.image_input), stack[3].long()


class TilePatches(Dataset):
    """Every ``patch`` px patch on a grid of step ``stride`` px over each tile, as the reference
    protocol trains (no augmentation): (image (3, p, p) float32 normalised with ``image_input``'s
    mean and std, mask (p, p) int64). Patch origins per axis are ``0, stride, 2 stride, ...`` up to
    ``length - patch`` (a strip at the far edge that no whole step reaches is left out, as in the
    reference); tiles smaller than a patch give none. Tile sizes are read from the image headers."""

    def __init__(self, tiles: Sequence[SegmentationTile], patch: int, stride: int,
                 image_input: ImageInput | None = None) -> None:
        from PIL import Image

        self.tiles = list(tiles)
        self.patch, self.stride = int(patch), int(stride)
        self.image_input = image_input or ImageInput()
        self.index: list[tuple[int, int, int]] = []
        for t, tile in enumerate(self.tiles):
            with Image.open(tile.image) as im:
                width, height = im.size
            self.index += [(t, y, x) for y in range(0, height - self.patch + 1, self.stride)
                           for x in range(0, width - self.patch + 1, self.stride)]
        if not self.index:
            raise DatasetError(f"no tile is at least {self.patch} px on a side: no training patch")
        self._cached: tuple[int, Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _tile(self, t: int) -> tuple[Tensor, Tensor]:
        """A tile's image and mask, decoded once while consecutive patches come from it."""
        if self._cached is None or self._cached[0] != t:
            self._cached = (t, *read_tile(self.tiles[t]))
        return self._cached[1], self._cached[2]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        t, y, x = self.index[index]
        image, mask = self._tile(t)
        p = self.patch
        return normalise(image[:, y:y + p, x:x + p], self.image_input), mask[y:y + p, x:x + p].long()


class WholeTiles(Dataset):
    """Whole tiles for evaluation: (image (3, H, W) float32 normalised with ``image_input``'s mean
    and std, mask (H, W) int64)."""

    def __init__(self, tiles: Sequence[SegmentationTile], image_input: ImageInput | None = None) -> None:
        self.tiles = list(tiles)
        self.image_input = image_input or ImageInput()

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = read_tile(self.tiles[index])
        return normalise(image, self.image_input), mask.long()


class DeepGlobeDataModule(L.LightningDataModule):
    """Random training crops, or with ``patch_stride`` every patch of a grid (:class:`TilePatches`),
    in shuffled batches; whole test tiles (one per batch)."""

    def __init__(self, train: Sequence[SegmentationTile], test: Sequence[SegmentationTile], crop_size: int = 256,
                 crops_per_tile: int = 1, batch_size: int = 8, num_workers: int = 2, seed: int = 0,
                 image_input: ImageInput | None = None, patch_stride: int | None = None) -> None:
        super().__init__()
        self.train_set = (TilePatches(train, crop_size, patch_stride, image_input) if patch_stride
                          else TileCrops(train, crop_size, crops_per_tile, seed, image_input))
        self.test_set = WholeTiles(test, image_input)
        self.batch_size = batch_size
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        drop = len(self.train_set) > self.batch_size
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=drop,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          worker_init_fn=worker_init if self.num_workers > 0 else None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=1, shuffle=False, num_workers=self.num_workers)


class LandCoverSegmenter(L.LightningModule):
    """Trains a segmenter with pixel-wise cross-entropy (unknown pixels ignored); ``trainer.test``
    predicts whole tiles by sliding window and accumulates ``self.confusion`` (K, K).

    ``freeze_encoder``: only the decoder and head learn; the encoder (BatchNorm statistics included)
    stays exactly the initial image encoder, so the resulting land-cover head can be merged into the
    audiovisual bundle it came from (``python -m model.bundle merge``)."""

    def __init__(self, segmenter: nn.Module, num_classes: int, lr: float = 5e-4, weight_decay: float = 1e-4,
                 epochs: int = 10, window: int = 256, stride: int = 128, freeze_encoder: bool = False,
                 schedule: str = "cosine") -> None:
        super().__init__()
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant, got {schedule!r}")
        self.schedule = schedule
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            for p in segmenter.encoder.parameters():
                p.requires_grad_(False)
        self.segmenter = segmenter
        self.train()  # build_segmenter returns eval mode; Lightning keeps modes as found
        self.num_classes = num_classes
        self.lr, self.weight_decay, self.epochs = lr, weight_decay, epochs
        self.window, self.stride = window, stride
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.tile_accuracy: list[float] = []  # per test tile: its labelled pixels predicted right

    def train(self, mode: bool = True) -> "LandCoverSegmenter":
        """Like nn.Module.train, but a frozen encoder keeps its BatchNorm layers in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.segmenter.encoder.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.segmenter(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, masks = batch
        loss = self.loss_fn(self(images).float(), masks)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def on_test_epoch_start(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.tile_accuracy = []

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        image, mask = batch
        window = self.window or whole_tile_window(image.shape[-2:])
        pred = sliding_window_logits(self.segmenter, image, window, self.stride or window).argmax(dim=1)
        tile = confusion_matrix(pred.cpu().numpy(), mask.cpu().numpy(), self.num_classes, IGNORE_INDEX)
        self.confusion += tile
        if tile.sum():
            self.tile_accuracy.append(float(np.trace(tile) / tile.sum()))

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.schedule == "constant":
            return torch.optim.Adam(params, lr=self.lr)
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


def landcover_classes() -> list[dict[str, Any]]:
    """The head's classes with their DeepGlobe colours, in output-channel order."""
    return [{"name": n, "color": list(c)} for n, c in zip(DEEPGLOBE_CLASSES, DEEPGLOBE_COLOURS)]


def segmentation_bundle(segmenter: nn.Module, init, *, encoder: str | EncoderSpec, tile_size: int, gsd: float,
                        decoder: dict[str, Any], provenance: dict[str, Any],
                        head_extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(bundle.json dict, tensors) for a fine-tuned segmenter: the image encoder is the segmenter's
    encoder plus ``fc`` (the init bundle's embedding head, else a fresh one with 128 outputs), and
    the ``landcover`` head (``encoder``: the init's spec, or an smp encoder name, as for
    ``model.nn.landcover.landcover_meta``). A bundle init also passes on its audio encoder, audio front-end,
    distance and image input; its other heads are dropped, since they were fitted to the image
    encoder before fine-tuning. Any other init records its image input's mean and std (those the
    training tiles were normalised with) at ``tile_size`` px and ``gsd`` m."""
    import model.bundle as bundle_mod
    from model.nn.landcover import encoder_state_from_segmenter, landcover_meta, landcover_tensors

    spec = init.spec
    backbone = encoder_state_from_segmenter(segmenter)
    if init.bundle is not None:
        fc = {k: torch.from_numpy(v.copy()) for k, v in init.bundle.part_tensors("image_encoder").items()
              if k.startswith("fc.")}
    else:
        fc = {f"fc.{k}": v for k, v in nn.Linear(spec.feature_dim, spec.embed_dim).state_dict().items()}
    tensors = {f"image_encoder.{k}": v for k, v in {**backbone, **fc}.items()}
    head = landcover_meta(landcover_classes(), encoder=encoder, tile_size=tile_size, gsd=gsd,
                          decoder=decoder, **(head_extra or {}))
    if init.bundle is not None:
        source = init.bundle
        meta = bundle_mod.make_meta(image_spec=spec, distance=source.distance, image_input=source.image_input,
                                    provenance=provenance, heads={"landcover": head})
        if source.has("audio_encoder"):
            meta["audio_encoder"] = source.meta["audio_encoder"]
            meta["audio"] = source.meta["audio"]
            tensors.update({k: v for k, v in source.tensors.items() if k.startswith("audio_encoder.")})
    else:
        image_input = replace(init.image_input, tile_size=tile_size, gsd=gsd,
                              note="image encoder fine-tuned for land cover; fc is untrained")
        meta = bundle_mod.make_meta(image_spec=spec, distance="cosine", image_input=image_input,
                                    provenance=provenance, heads={"landcover": head})
    tensors.update(landcover_tensors(segmenter))
    return meta, tensors
