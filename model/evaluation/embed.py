"""Embed a SoundingEarth-format folder with a bundle's encoders (evaluation, gallery, probes).

Images use the evaluation transform (centre crop, resize to the bundle's tile size); each
recording is embedded from all of its chunks, averaged (``AudioEncoder.embed_recordings``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.nn.encoders import audio_encoder_from_bundle, image_encoder_from_bundle


@dataclass
class Embedded:
    """Embeddings of N pairs: image (N, D), audio (N, D), keys (N,), locations (N, 2) lon/lat
    degrees, dominant sound-source names (N,) or empty strings."""

    image: np.ndarray
    audio: np.ndarray
    keys: np.ndarray
    locations: np.ndarray
    dominant: list[str]


@torch.no_grad()
def embed_folder(bundle, root: str | Path, split: str = "test", audio_source: str = "spectrogram",
                 batch_size: int = 32, num_workers: int = 0, crop: float = 0.375,
                 images: bool = True, progress: bool = True) -> Embedded:
    """Embed every readable pair of ``split`` in ``root`` with ``bundle`` (a loaded model.bundle.Bundle);
    an unreadable one is reported and left out (``keys`` says which pairs were embedded)."""
    from model.data import SoundingEarthDataset, collate

    dataset = SoundingEarthDataset(root, split=split, audio_source=audio_source,
                                   image_input=bundle.image_input, crop=crop, augment=False,
                                   audio_config=bundle.audio_config, random_audio_chunk=False,
                                   substitute_unreadable=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate)
    image_encoder = image_encoder_from_bundle(bundle) if images else None
    audio_encoder = audio_encoder_from_bundle(bundle)
    zi, za, keys, locs, dominant = [], [], [], [], []
    for batch in tqdm(loader, desc=f"embedding {split}", disable=not progress, unit="batch"):
        if batch is None:  # every pair of the batch unreadable (reported and left out by the dataset)
            continue
        if image_encoder is not None:
            zi.append(image_encoder(batch["image"]).numpy())
        za.append(audio_encoder.embed_recordings(batch["audio"], batch["counts"], batch_size=64).numpy())
        keys.append(batch["key"].numpy())
        locs.append(batch["location"].numpy())
        dominant.extend(batch.get("dominant", [""] * len(batch["key"])))
    dim = bundle.embedding_dim
    return Embedded(
        image=np.concatenate(zi) if zi else np.zeros((0, dim), np.float32),
        audio=np.concatenate(za) if za else np.zeros((0, dim), np.float32),
        keys=np.concatenate(keys) if keys else np.zeros(0, np.int64),
        locations=np.concatenate(locs).astype(np.float64) if locs else np.zeros((0, 2)),
        dominant=dominant,
    )
