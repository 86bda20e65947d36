"""The audio gallery: every recording of a SoundingEarth-format folder, embedded once, in the bundle.

``python -m model.gallery --bundle B --data DIR`` embeds each recording with the bundle's audio
encoder (all of its whole chunks, averaged: ``AudioEncoder.embed_recordings``) and writes
``B/gallery.parquet`` atomically; its columns and schema metadata are described in
:mod:`model.bundle.gallery`, which reads it.

Reruns embed only keys the gallery lacks. Everything is redone when the audio encoder, the audio
front-end, the audio source or the data folder changed; a bundle whose content hash changed for
another reason (a head was added, the bundle was merged) keeps its embeddings and is re-stamped.
Rows of recordings that are no longer in the folder are dropped; titles are refreshed. Progress is
saved every ``save_every`` recordings, so a killed run loses little.

Only recordings that have an aerial image too are listed (the folder is read as image/audio pairs
by :class:`model.data.SoundingEarthDataset`), but images are never decoded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from model.bundle.gallery import (TEXT_COLUMNS, gallery_path, gallery_stamp, read_gallery_file, write_gallery)


@dataclass
class GalleryUpdate:
    """What one :func:`build_gallery` run did: rows in the gallery, newly embedded, kept, dropped."""

    path: Path
    total: int
    embedded: int
    kept: int
    dropped: int
    written: bool
    reason: str = ""


# ---- building ---------------------------------------------------------------------------------

class _Recordings:
    """A map-style dataset of (key, chunks (n, 1, n_mels, frames)) for some keys of a folder."""

    def __init__(self, dataset, keys: Sequence[int]) -> None:
        self.dataset, self.keys = dataset, list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None]:
        """(key, chunks), or (key, None) for an unreadable recording (reported by the dataset)."""
        from model.data.errors import UnreadableItemError

        try:
            return self.keys[i], self.dataset.audio_chunks(self.keys[i])
        except UnreadableItemError as e:
            self.dataset.report_unreadable(self.keys[i], e)
            return self.keys[i], None


def _collate_recordings(items: list[tuple[int, np.ndarray | None]]):
    """(keys, chunks, counts) of the readable recordings; ``chunks`` None when there are none."""
    import torch

    items = [(k, c) for k, c in items if c is not None]
    if not items:
        return [], None, []
    keys = [k for k, _ in items]
    counts = [len(c) for _, c in items]
    return keys, torch.from_numpy(np.concatenate([c for _, c in items])), counts


def _open_folder(bundle, root: Path, split: str, audio_source: str):
    from model.data import SoundingEarthDataset

    return SoundingEarthDataset(root, split=split, audio_source=audio_source,
                                image_input=bundle.image_input, audio_config=bundle.audio_config,
                                image_cache=False, random_audio_chunk=False, substitute_unreadable=False)


def _audio_paths(root: Path, keys: Sequence[int]) -> list[str]:
    """The playable recording of each key relative to ``root`` (POSIX separators), "" if none."""
    from model.data.metadata import AUDIO_DIR, AUDIO_SUFFIXES, files_by_key

    files = files_by_key(root / AUDIO_DIR, AUDIO_SUFFIXES)
    return [files[k].relative_to(root).as_posix() if k in files else "" for k in keys]


def _rows(root: Path, metadata: pd.DataFrame, keys: Sequence[int]) -> pd.DataFrame:
    """The gallery's metadata columns for ``keys`` (in that order)."""
    table = metadata.loc[list(keys)]
    rows = pd.DataFrame({
        "key": np.asarray(keys, dtype=np.int64),
        "longitude": table["longitude"].to_numpy(np.float64),
        "latitude": table["latitude"].to_numpy(np.float64),
    })
    for column in TEXT_COLUMNS:
        rows[column] = (table[column].fillna("").astype(str).to_numpy() if column in table.columns
                        else np.full(len(keys), "", dtype=object))
    if "dominant" in table.columns:
        rows["dominant"] = table["dominant"].fillna("").astype(str).to_numpy()
    rows["audio_path"] = _audio_paths(root, keys)
    return rows



def _reusable(path: Path, stamp: dict[str, str]) -> tuple[dict[int, np.ndarray], str]:
    """Embeddings by key of an existing gallery that ``stamp`` can keep, and why not when it can't."""
    if not path.is_file():
        return {}, ""
    rows, embeddings, meta = read_gallery_file(path)
    for field, what in (("audio_encoder_hash", "audio encoder"), ("audio_source", "audio source"),
                        ("data", "data folder"), ("embedding_dim", "embedding size")):
        if meta.get(field) != stamp[field]:
            return {}, f"the {what} changed: embedding everything again"
    return dict(zip(rows["key"].astype(int).tolist(), embeddings)), ""


def _embed(bundle, dataset, keys: Sequence[int], batch_size: int, workers: int, device: str,
           progress: bool, on_batch) -> None:
    """Embed ``keys``' recordings in batches; ``on_batch(keys, (B, D) float32)`` after each."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from model.nn.encoders import audio_encoder_from_bundle

    encoder = audio_encoder_from_bundle(bundle).to(device)
    loader = DataLoader(_Recordings(dataset, keys), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate_recordings)
    with torch.no_grad(), tqdm(total=len(keys), desc="gallery", unit="rec", disable=not progress) as bar:
        for batch_keys, chunks, counts in loader:
            if chunks is not None:  # else every recording of the batch was unreadable, and left out
                z = encoder.embed_recordings(chunks.to(device), counts, batch_size=64)
                on_batch(batch_keys, z.float().cpu().numpy())
            bar.update(min(batch_size, bar.total - bar.n))


class _Collected:
    """Embeddings by key gathered so far; written out every ``save_every`` new ones and at the end."""

    def __init__(self, path: Path, root: Path, metadata: pd.DataFrame, stamp: dict[str, str],
                 kept: dict[int, np.ndarray], save_every: int) -> None:
        self.path, self.root, self.metadata, self.stamp = path, root, metadata, stamp
        self.done, self.save_every, self.pending = dict(kept), save_every, 0

    def add(self, keys: list[int], z: np.ndarray) -> None:
        self.done.update(zip(keys, z))
        self.pending += len(keys)
        if self.pending >= self.save_every:
            self.save()

    def save(self) -> None:
        order = sorted(self.done)
        write_gallery(self.path, _rows(self.root, self.metadata, order),
                      np.stack([self.done[k] for k in order]), self.stamp)
        self.pending = 0


def build_gallery(bundle, root: str | os.PathLike, split: str = "all", audio_source: str = "spectrogram",
                  batch_size: int = 16, workers: int = 0, device: str = "cpu", progress: bool = True,
                  save_every: int = 2048) -> GalleryUpdate:
    """Embed the recordings of ``root`` (``split``) that ``bundle``'s gallery lacks and write it
    (module doc: what is kept, redone and dropped)."""
    root = Path(root)
    path = gallery_path(bundle)
    stamp = gallery_stamp(bundle, root, audio_source)
    dataset = _open_folder(bundle, root, split, audio_source)
    keys = [int(k) for k in dataset.keys]
    known, reason = _reusable(path, stamp)
    kept = {k: known[k] for k in keys if k in known}
    dropped = len(set(known) - set(keys))
    todo = [k for k in keys if k not in kept]
    collected = _Collected(path, root, dataset.metadata, stamp, kept, save_every)
    if todo:
        _embed(bundle, dataset, todo, batch_size, workers, device, progress, collected.add)
    written = bool(todo) or dropped > 0 or not path.is_file() or _stale(path, root, dataset.metadata, stamp)
    if written:
        collected.save()
    return GalleryUpdate(path, len(collected.done), len(todo), len(kept), dropped, written, reason)


def _stale(path: Path, root: Path, metadata: pd.DataFrame, stamp: dict[str, str]) -> bool:
    """Whether an otherwise complete gallery has an old stamp or old metadata columns."""
    rows, _, meta = read_gallery_file(path)
    if meta != stamp:
        return True
    fresh = _rows(root, metadata, rows["key"].astype(int).tolist())
    return list(fresh.columns) != list(rows.columns) or not fresh.equals(rows)


# ---- command line -----------------------------------------------------------------------------
