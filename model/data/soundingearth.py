"""SoundingEarth-format image/audio pairs as a torch Dataset.

A sample is one key of ``metadata.csv`` that has an image and a recording of the chosen audio
source; keys missing either are dropped (counted in ``dataset.dropped`` and logged), as are keys
a cache has marked unreadable (:mod:`model.data.bad_items`). A sample whose image or recording
turns out unreadable when read is reported by name and marked in the log-mel cache, so one bad
recording among thousands does not stop a run: training replaces it by the next readable sample
(``substitute_unreadable``, the default), evaluation gets None instead, which :func:`collate` drops,
so that every pair it scores is a real one and is scored once. Each sample is a dict:

- ``image``: float32 (3, S, S), normalised with the dataset's ``image_input`` mean and std (see
  :mod:`model.data.transforms`);
- ``audio``: float32 (n, 1, n_mels, chunk_frames) log-mel chunks of the recording: one chunk at a
  random start frame when ``random_audio_chunk`` (the training default), else every whole chunk;
- ``key``: int; ``location``: float64 (2,) tensor (longitude, latitude) in degrees;
- ``dominant``: the dominant sound source of the recording ("" when blank), only when the metadata has
  that column (``model.synth`` pairs do).

Images come from ``images/{key}.jpg`` or, much faster, from a prepared cache
(:mod:`model.data.prepare`); audio from ``spectrograms/{key}.jpg`` (8-bit SoundingEarth
encoding) or from ``audio/{key}.mp3`` through a log-mel cache (:mod:`model.data.audio_cache`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from model.bundle.audio import AudioConfig, AudioError, convert_levels, read_spectrogram_jpeg, to_chunks
from model.bundle.image_input import ImageInput
from model.core.errors import one_line
from model.data.audio_cache import LogmelCache, default_logmel_cache_dir
from model.data.bad_items import LeftOut, bad_keys, mark_bad
from model.data.collate import collate
from model.data.errors import DatasetError, UnreadableItemError
from model.data.image_cache import (
    ImageCacheSpec, cached_keys, check_image_cache, find_image_cache, load_cached_image,
)
from model.data.metadata import (
    AUDIO_DIR, AUDIO_SUFFIXES, IMAGE_DIR, IMAGE_SUFFIXES, SPECTROGRAM_DIR, SPECTROGRAM_SUFFIXES,
    files_by_key, read_metadata,
)
from model.data.splits import normalise_split, select_split
from model.data.transforms import EVAL_CROP, TRAIN_CROP, centre_region, image_transform, read_image

log = logging.getLogger(__name__)
AUDIO_SOURCES = ("spectrogram", "audio")
SPECTROGRAM_CONFIG = AudioConfig()  # the level encoding spectrogram JPEGs are stored in


class SoundingEarthDataset(Dataset):
    """Co-located aerial images and audio of a SoundingEarth-format folder.

    root: the folder holding ``metadata.csv``; split: "train", "val", "test" or "all" (key mod 10
    scheme, or the ``key`` column of ``split_files[split]`` when given); audio_source:
    "spectrogram" or "audio"; image_input: the encoder input the images are made for (its mean
    and std normalise them; default ``ImageInput()``); image_size: output side S in px (default
    ``image_input.tile_size``); crop: evaluation region as a
    fraction of the tile side (384 / 1024); train_crop: region training crops are drawn from
    (512 / 1024); augment: random image augmentation (:class:`TrainAugment`); cache_dir: log-mel
    cache for raw audio (default ``ROOT/.cache/logmel-<config hash>``); image_cache: a prepared
    image cache folder, None to use a suitable one under ``ROOT/.cache`` if any, True to require
    one there, False for none (samples the cache lacks are decoded from their JPEG);
    random_audio_chunk: one random chunk per recording (default: True for the train split);
    seed: combined with torch's seed (set per DataLoader worker and epoch), the sample index and a
    call counter to draw the random parameters.
    """

    collate = staticmethod(collate)

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        audio_source: str = "spectrogram",
        image_size: int | None = None,
        crop: float = EVAL_CROP,
        augment: bool = False,
        audio_config: AudioConfig | None = None,
        split_files: Mapping[str, str | os.PathLike] | None = None,
        cache_dir: str | os.PathLike | None = None,
        image_cache: str | os.PathLike | bool | None = None,
        random_audio_chunk: bool | None = None,
        seed: int = 0,
        train_crop: float = TRAIN_CROP,
        image_input: ImageInput | None = None,
        substitute_unreadable: bool = True,
    ) -> None:
        super().__init__()
        image_input = image_input or ImageInput()
        image_size = image_input.tile_size if image_size is None else image_size
        check_options(audio_source, image_size, crop, train_crop)
        table = read_metadata(root)
        self.root = Path(root)
        self.split = normalise_split(split)
        self.audio_source = audio_source
        self.audio_config = audio_config or AudioConfig()
        check_audio_source(root, audio_source, self.audio_config)
        self.image_size, self.crop, self.train_crop = int(image_size), float(crop), float(train_crop)
        self.augment = bool(augment)
        self.random_audio_chunk = self.split == "train" if random_audio_chunk is None else bool(random_audio_chunk)
        self.seed = int(seed)
        self.image_input = replace(image_input, tile_size=self.image_size)
        self.transform = image_transform(self.image_input, self.augment)
        self._draws = 0

        self._images = files_by_key(self.root / IMAGE_DIR, IMAGE_SUFFIXES)
        self._audio = self._audio_files()
        self.keys = self._select_keys(table, split_files)
        self.logmel_cache = (LogmelCache(cache_dir or default_logmel_cache_dir(self.root, self.audio_config),
                                         self.audio_config) if audio_source == "audio" else None)
        self.image_cache, self.image_cache_spec, self._cached = self._open_image_cache(image_cache)
        self.keys = self._drop_marked(self.keys)
        self.left_out = LeftOut()  # met while reading, in this process
        self._left_keys: set[int] = set()
        self.substitute_unreadable = bool(substitute_unreadable)
        self.metadata = table.loc[self.keys]
        self._lonlat = self.metadata[["longitude", "latitude"]].to_numpy(dtype=np.float64)
        self._dominant = (self.metadata["dominant"].fillna("").astype(str).tolist()
                          if "dominant" in self.metadata.columns else None)

    # ---- construction helpers -------------------------------------------------------------

    @property
    def region(self) -> float:
        """Fraction of the tile side the transform sees: train_crop when augmenting, else crop."""
        return self.train_crop if self.augment else self.crop

    def _audio_files(self) -> dict[int, Path]:
        if self.audio_source == "spectrogram":
            return files_by_key(self.root / SPECTROGRAM_DIR, SPECTROGRAM_SUFFIXES)
        return files_by_key(self.root / AUDIO_DIR, AUDIO_SUFFIXES)

    def _select_keys(self, table: pd.DataFrame, split_files: Mapping[str, Any] | None) -> list[int]:
        """Keys of the split that have an image and audio; counts of the others in ``self.dropped``."""
        in_split = select_split(table.index, self.split, split_files)
        no_image = [k for k in in_split if k not in self._images]
        no_audio = [k for k in in_split if k in self._images and k not in self._audio]
        keys = [k for k in in_split if k in self._images and k in self._audio]
        self.dropped = {"no_image": len(no_image), "no_audio": len(no_audio)}
        if no_image or no_audio:
            log.info("%s split %s: dropped %d keys without an image and %d without %s audio; %d samples",
                     self.root, self.split, len(no_image), len(no_audio), self.audio_source, len(keys))
        if not keys:
            raise DatasetError(
                f"{self.root}: split {self.split!r} has no samples ({len(in_split)} keys in the split, "
                f"{len(no_image)} without an image in {IMAGE_DIR}/, {len(no_audio)} without "
                f"{self.audio_source} in {self._audio_dir_name()}/)")
        return keys

    def _drop_marked(self, keys: list[int]) -> list[int]:
        """``keys`` less those the image or log-mel cache marked unreadable (``dropped["unreadable"]``)."""
        marked = bad_keys(self.image_cache)
        if self.logmel_cache is not None:
            marked.update(bad_keys(self.logmel_cache.folder))
        kept = [k for k in keys if k not in marked]
        self.dropped["unreadable"] = len(keys) - len(kept)
        if len(kept) < len(keys):
            log.warning("%s split %s: %d keys marked unreadable are left out (first: %s)", self.root, self.split,
                        len(keys) - len(kept), next(marked[k] for k in keys if k in marked))
        if not kept:
            raise DatasetError(f"{self.root}: split {self.split!r} has no readable samples "
                               f"({len(keys)} marked unreadable)")
        return kept

    def _audio_dir_name(self) -> str:
        return SPECTROGRAM_DIR if self.audio_source == "spectrogram" else AUDIO_DIR

    def _open_image_cache(
        self, image_cache: str | os.PathLike | bool | None
    ) -> tuple[Path | None, ImageCacheSpec | None, set[int]]:
        """The prepared cache to read from (None when none is used), its spec and the keys it holds."""
        if image_cache is False or not self.image_input.antialias:  # caches hold antialiased resizes
            return None, None, set()
        density = self.image_size / self.crop
        if image_cache is None or image_cache is True:
            folder = find_image_cache(self.root, self.region, density)
            if folder is None:
                if image_cache is True:
                    raise DatasetError(f"{self.root}: no prepared image cache serves the {self.region:g} "
                                       f"centre crop at {round(self.region * density)} px "
                                       "(run python -m model.data.prepare)")
                return None, None, set()
        else:
            folder = Path(image_cache)
        spec = check_image_cache(folder, self.region, density)
        held = cached_keys(folder) & set(self.keys)
        if len(held) < len(self.keys):
            log.info("%s: %d of %d samples are not in the image cache and are decoded from JPEG",
                     folder, len(self.keys) - len(held), len(self.keys))
        return folder, spec, held

    # ---- samples ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        """The sample at ``index``; when it is unreadable, the next readable one, or None without
        ``substitute_unreadable`` (module doc)."""
        tries = len(self.keys) if self.substitute_unreadable else 1
        for step in range(tries):
            i = (index + step) % len(self.keys)
            try:
                return self._sample(i)
            except UnreadableItemError as e:
                self.report_unreadable(self.keys[i], e)
        if not self.substitute_unreadable:
            return None
        raise DatasetError(f"{self.root}: no sample of split {self.split!r} is readable")

    def report_unreadable(self, key: int, error: UnreadableItemError) -> None:
        """Report an unreadable key (once per process) and mark it in the log-mel cache, if any."""
        if key in self._left_keys:
            return
        self._left_keys.add(key)
        self.left_out.add(f"key {key}", one_line(error))
        if self.logmel_cache is not None:
            try:
                mark_bad(self.logmel_cache.folder, key, one_line(error))
            except OSError:
                pass  # a read-only cache: the key is still left out in this process

    def _sample(self, index: int) -> dict[str, Any]:
        key = self.keys[index]
        needs_rng = self.augment or self.random_audio_chunk
        rng = self._rng(index) if needs_rng else None
        sample: dict[str, Any] = {
            "image": self.transform(self.image_region(key), rng),
            "audio": torch.from_numpy(self.audio_chunks(key, rng if self.random_audio_chunk else None)),
            "key": key,
            "location": torch.from_numpy(self._lonlat[index].copy()),
        }
        if self._dominant is not None:
            sample["dominant"] = self._dominant[index]
        return sample

    def image_region(self, key: int) -> torch.Tensor:
        """uint8 (3, L, L): the centre ``region`` of the tile, from the cache when it holds the key."""
        if key in self._cached:
            image = load_cached_image(self.image_cache, key)
            return centre_region(image, self.region / self.image_cache_spec.crop)
        return centre_region(read_image(self._images[key]), self.region)

    def logmel(self, key: int) -> np.ndarray:
        """(n_mels, T) float32 spectrogram of the key's recording in ``audio_config``'s level encoding."""
        path = self._audio[key]
        try:
            if self.audio_source == "audio":
                return self.logmel_cache.load(key, path)
            levels = read_spectrogram_jpeg(path, n_mels=self.audio_config.n_mels)
            return convert_levels(levels, SPECTROGRAM_CONFIG, self.audio_config)
        except AudioError as e:
            raise UnreadableItemError(str(e)) from None

    def audio_chunks(self, key: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, 1, n_mels, chunk_frames) float32: every chunk, or one random chunk when ``rng`` is given."""
        return to_chunks(self.logmel(key), self.audio_config, rng=rng, source=str(self._audio[key]))

    def _rng(self, index: int) -> np.random.Generator:
        """A generator seeded by (seed, torch's initial seed, index, call count): new draws per call,
        different per DataLoader worker and epoch, reproducible under ``torch.manual_seed``."""
        self._draws += 1
        return np.random.default_rng([self.seed, torch.initial_seed(), index, self._draws])

    def __repr__(self) -> str:
        cache = f", image_cache={str(self.image_cache)!r}" if self.image_cache else ""
        return (f"{type(self).__name__}({str(self.root)!r}, split={self.split!r}, "
                f"audio_source={self.audio_source!r}, samples={len(self)}, augment={self.augment}{cache})")


def check_audio_source(root: str | os.PathLike, audio_source: str, audio_config: AudioConfig) -> None:
    """DatasetError when ``audio_source`` cannot give ``audio_config``'s input: spectrogram JPEGs hold
    ``SPECTROGRAM_CONFIG.n_mels`` mel bands, so another number needs the recordings themselves."""
    if audio_source == "spectrogram" and audio_config.n_mels != SPECTROGRAM_CONFIG.n_mels:
        raise DatasetError(f"{root}: spectrogram JPEGs hold {SPECTROGRAM_CONFIG.n_mels} mel bands and the audio input "
                           f"has {audio_config.n_mels}; read the recordings instead (--audio-source audio)")


def check_options(audio_source: str, image_size: int, crop: float, train_crop: float) -> None:
    """DatasetError for an unknown audio source, a non-positive size or a crop outside (0, 1]."""
    if audio_source not in AUDIO_SOURCES:
        raise DatasetError(f"audio_source must be one of {', '.join(AUDIO_SOURCES)}, got {audio_source!r}")
    if int(image_size) < 1:
        raise DatasetError(f"image_size must be a positive number of pixels, got {image_size}")
    for name, value in (("crop", crop), ("train_crop", train_crop)):
        if not 0.0 < float(value) <= 1.0:
            raise DatasetError(f"{name} must be a fraction of the tile side in (0, 1], got {value}")
