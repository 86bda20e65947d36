"""Lightning DataModule for SoundingEarth-format folders (train / validation / test by key)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from model.bundle.audio import AudioConfig
from model.bundle.image_input import ImageInput
from model.data.collate import collate
from model.data.errors import DatasetError
from model.data.soundingearth import SoundingEarthDataset
from model.data.transforms import EVAL_CROP, image_transform
from model.data.workers import worker_init

MIN_PAIRS = 2  # a pair needs at least one other pair in its batch to be contrasted with


def loader_generator(seed: int, stream: int = 0) -> torch.Generator:
    """A Generator for one DataLoader's shuffling and its workers' base seed, seeded by
    ``(seed, stream)``: repeatable, and independent of what the global generator has been through."""
    return torch.Generator().manual_seed(int(seed) * 1000 + int(stream))


class SoundingEarthDataModule(L.LightningDataModule):
    """Training batches: augmented images and one random audio chunk per recording.
    Validation batches: evaluation transform and one random (seeded) chunk, so that validation
    loss is comparable between epochs and with the training loss. Images are made for the encoder
    input ``image_input`` (size, mean and std; default ``ImageInput()``), recordings for the audio
    input ``audio_config`` (mel bands, frames per chunk; default ``AudioConfig()``). ``augment``:
    the training images' augmentation, True or "ours" (:class:`~model.data.transforms.TrainAugment`),
    "reference" (:class:`~model.data.transforms.ReferenceAugment`), False or "none" (the
    evaluation transform); augmented images come from the dataset's ``train_crop`` region."""

    def __init__(self, root: str | Path, batch_size: int = 32, num_workers: int = 2,
                 image_input: ImageInput | None = None, crop: float = EVAL_CROP,
                 audio_source: str = "spectrogram", augment: bool | str = True, seed: int = 0,
                 audio_config: AudioConfig | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.common = dict(image_input=image_input or ImageInput(), crop=crop, audio_source=audio_source, seed=seed,
                           audio_config=audio_config or AudioConfig())
        self.augment = augment
        self.seed = int(seed)

    def setup(self, stage: str | None = None) -> None:
        augmented = self.augment not in (False, "none")
        self.train_set = SoundingEarthDataset(self.root, split="train", augment=augmented,
                                              random_audio_chunk=True, **self.common)
        if augmented:  # the dataset knows only whether to augment; the kind is chosen here
            self.train_set.transform = image_transform(self.train_set.image_input, self.augment)
        self.val_set = SoundingEarthDataset(self.root, split="val", augment=False,
                                            random_audio_chunk=True, **self.common)
        for name, dataset in (("train", self.train_set), ("val", self.val_set)):
            if len(dataset) < MIN_PAIRS:
                raise DatasetError(f"{self.root}: split {name!r} has {len(dataset)} pair; the losses compare "
                                   f"each pair with others, so every split needs at least {MIN_PAIRS}")

    def _loader(self, dataset, shuffle: bool, drop_last: bool, stream: int) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, drop_last=drop_last,
                          num_workers=self.num_workers, collate_fn=collate,
                          persistent_workers=self.num_workers > 0, pin_memory=False,
                          worker_init_fn=worker_init if self.num_workers > 0 else None,
                          generator=loader_generator(self.seed, stream))

    def train_dataloader(self) -> DataLoader:
        # a full batch of negatives at every step: the last, smaller batch is dropped
        drop = len(self.train_set) > self.batch_size
        return self._loader(self.train_set, shuffle=True, drop_last=drop, stream=0)

    def val_dataloader(self) -> DataLoader:
        # a last batch of one pair has nothing to compare with: dropped (every other pair is kept)
        drop = len(self.val_set) % self.batch_size == 1
        return self._loader(self.val_set, shuffle=False, drop_last=drop, stream=1)
