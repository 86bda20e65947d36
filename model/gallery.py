"""The audio gallery: every recording of a SoundingEarth-format folder, embedded once, in the bundle.

``python -m model.gallery --bundle B --data DIR`` embeds each recording with the bundle's audio
encoder (all of its whole chunks, averaged: ``AudioEncoder.embed_recordings``) and writes
``B/gallery.parquet`` (atomically: temp file in the bundle folder, then ``os.replace``):

=================  ==========================================================================
column             meaning
=================  ==========================================================================
key                int64, the recording's key in ``metadata.csv``
longitude          float64, degrees (WGS84)
latitude           float64, degrees (WGS84)
title              str ("" when the metadata has none)
description        str ("" when the metadata has none)
dominant           str, the metadata's ``dominant`` class (only when the metadata has that column)
audio_path         str, the playable recording relative to DIR (``audio/{key}.mp3``), "" if none
embedding          fixed-size list of D float32, in the bundle's embedding space
=================  ==========================================================================

The parquet schema metadata records ``geoaudio.bundle_hash`` (the bundle's content hash when the
file was written), ``geoaudio.audio_encoder_hash`` (:func:`audio_encoder_hash`: the audio
encoder's tensors and audio front-end, the only things embeddings depend on), the audio source,
the data folder, the embedding size and the distance.

Reruns embed only keys the gallery lacks. Everything is redone when the audio encoder, the audio
front-end, the audio source or the data folder changed; a bundle whose content hash changed for
another reason (a head was added, the bundle was merged) keeps its embeddings and is re-stamped.
Rows of recordings that are no longer in the folder are dropped; titles are refreshed. Progress is
saved every ``save_every`` recordings, so a killed run loses little.

Only recordings that have an aerial image too are listed (the folder is read as image/audio pairs
by :class:`model.data.SoundingEarthDataset`), but images are never decoded.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from model.cli import fail, run_cli

GALLERY_FILE = "gallery.parquet"
META_PREFIX = "geoaudio."
TEXT_COLUMNS = ("title", "description")
COLUMNS = ("key", "longitude", "latitude", "title", "description", "dominant", "audio_path")
MAX_BLOCK_ELEMENTS = 1 << 24  # distances computed at once by `nearest` (16 M float64 = 128 MiB)


class GalleryError(ValueError):
    """A gallery that cannot be built or used; the message names the file or folder."""


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


def gallery_path(bundle) -> Path:
    """``BUNDLE/gallery.parquet``."""
    return Path(bundle.path) / GALLERY_FILE


def audio_encoder_hash(bundle) -> str:
    """sha256 (first 16 hex digits) of the audio front-end config and every ``audio_encoder.*``
    tensor (name, dtype, shape, bytes): equal hashes give equal embeddings."""
    if not bundle.has("audio_encoder"):
        raise GalleryError(f"{bundle.path}: bundle has no audio encoder, so it cannot embed a gallery")
    h = hashlib.sha256(json.dumps(bundle.meta.get("audio", {}), sort_keys=True).encode())
    for name in sorted(k for k in bundle.tensors if k.startswith("audio_encoder.")):
        array = np.ascontiguousarray(bundle.tensors[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()[:16]


# ---- reading ----------------------------------------------------------------------------------

def _schema_meta(table) -> dict[str, str]:
    raw = table.schema.metadata or {}
    return {k.decode()[len(META_PREFIX):]: v.decode() for k, v in raw.items()
            if k.decode().startswith(META_PREFIX)}


@lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """Rows, embeddings (N, D) float32 (read-only) and schema metadata of one version of a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise GalleryError(f"{path}: unreadable gallery ({str(e).strip().splitlines()[0]})") from None
    meta = _schema_meta(table)
    if "embedding" not in table.column_names or "key" not in table.column_names or "embedding_dim" not in meta:
        raise GalleryError(f"{path}: not a geoaudio gallery (no key/embedding columns or metadata)")
    dim = int(meta["embedding_dim"])
    column = table.column("embedding").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False) if len(column) else np.zeros(0)
    embeddings = np.asarray(values, dtype=np.float32).reshape(len(column), dim)
    embeddings.setflags(write=False)
    rows = table.drop(["embedding"]).to_pandas()
    return rows, embeddings, meta


def read_gallery_file(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """A gallery file's rows, embeddings and ``geoaudio.*`` schema metadata (cached per version)."""
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"{path}: no gallery (run python -m model.gallery --bundle ... --data ...)")
    stat = path.stat()
    return _read(str(path), stat.st_mtime_ns, stat.st_size)


def _current(bundle) -> tuple[pd.DataFrame, np.ndarray]:
    """The bundle's gallery, checked against its audio encoder (cached; do not modify)."""
    path = gallery_path(bundle)
    rows, embeddings, meta = read_gallery_file(path)
    if meta.get("audio_encoder_hash") != audio_encoder_hash(bundle):
        raise GalleryError(f"{path}: made with another audio encoder than this bundle's; "
                           "rebuild it with python -m model.gallery")
    return rows, embeddings


def load_gallery(bundle) -> tuple[pd.DataFrame, np.ndarray]:
    """The bundle's gallery: a DataFrame of :data:`COLUMNS` (``dominant`` only when recorded) and
    the (N, D) float32 embeddings in the same row order; ``rows.attrs`` holds the schema metadata
    (``attrs["data"]``: the folder ``audio_path`` is relative to). GalleryError when the gallery is
    missing or was made with another audio encoder."""
    rows, embeddings = _current(bundle)
    rows = rows.copy()
    rows.attrs.update(read_gallery_file(gallery_path(bundle))[2])
    return rows, np.array(embeddings)


def nearest(bundle, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest gallery recordings of each row of ``embeddings`` (N, D) under the bundle's
    distance (euclidean ``||a - b||``; cosine ``1 - cos(a, b)``).

    Returns (indices (N, k') int64 into the gallery rows, distances (N, k') float64), nearest
    first, with k' = min(k, gallery size). Distances are computed in blocks of queries.
    """
    _, gallery = _current(bundle)
    return nearest_in(gallery, embeddings, k, bundle.distance)


def nearest_in(gallery: np.ndarray, queries: np.ndarray, k: int, distance: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest` against an explicit (M, D) gallery matrix."""
    from model.retrieval import pairwise_distance

    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise GalleryError(f"gallery: query embeddings must be (N, {gallery.shape[1]}), got {queries.shape}")
    if int(k) < 1:
        raise GalleryError(f"gallery: k must be at least 1, got {k}")
    if len(gallery) == 0:
        raise GalleryError("gallery: the gallery is empty")
    k = min(int(k), len(gallery))
    indices = np.zeros((len(queries), k), np.int64)
    distances = np.zeros((len(queries), k), np.float64)
    block = max(1, MAX_BLOCK_ELEMENTS // len(gallery))
    for start in range(0, len(queries), block):
        d = pairwise_distance(queries[start:start + block], gallery, distance)
        if k < d.shape[1]:
            top = np.argpartition(d, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(k), d.shape).copy()
        order = np.argsort(np.take_along_axis(d, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        indices[start:start + block] = top
        distances[start:start + block] = np.take_along_axis(d, top, axis=1)
    return indices, distances


def nearest_rows(bundle, embeddings: np.ndarray, k: int) -> pd.DataFrame:
    """:func:`nearest` as a table: one row per (query, rank) with ``query`` (row of
    ``embeddings``), ``rank`` (0 = nearest), ``distance`` and the gallery row's columns.

    Each call checks the gallery against the bundle's audio encoder (a hash of its weights); for
    many calls, check once with :func:`load_gallery` and use :func:`nearest_in` and
    :func:`neighbour_table`."""
    rows, gallery = _current(bundle)
    return neighbour_table(rows, *nearest_in(gallery, embeddings, k, bundle.distance))


def neighbour_table(rows: pd.DataFrame, indices: np.ndarray, distances: np.ndarray) -> pd.DataFrame:
    """The :func:`nearest_rows` table from gallery ``rows`` and :func:`nearest_in`'s (indices, distances)."""
    found = rows.iloc[indices.reshape(-1)].reset_index(drop=True)
    found.insert(0, "query", np.repeat(np.arange(len(indices)), indices.shape[1]))
    found.insert(1, "rank", np.tile(np.arange(indices.shape[1]), len(indices)))
    found.insert(2, "distance", distances.reshape(-1))
    return found


# ---- building ---------------------------------------------------------------------------------

class _Recordings:
    """A map-style dataset of (key, chunks (n, 1, n_mels, frames)) for some keys of a folder."""

    def __init__(self, dataset, keys: Sequence[int]) -> None:
        self.dataset, self.keys = dataset, list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        return self.keys[i], self.dataset.audio_chunks(self.keys[i])


def _collate_recordings(items: list[tuple[int, np.ndarray]]):
    import torch

    keys = [k for k, _ in items]
    counts = [len(c) for _, c in items]
    return keys, torch.from_numpy(np.concatenate([c for _, c in items])), counts


def _open_folder(bundle, root: Path, split: str, audio_source: str):
    from model.data import SoundingEarthDataset

    return SoundingEarthDataset(root, split=split, audio_source=audio_source,
                                image_size=bundle.image_input.tile_size, audio_config=bundle.audio_config,
                                image_cache=False, random_audio_chunk=False)


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


def gallery_stamp(bundle, root: Path, audio_source: str) -> dict[str, str]:
    """The ``geoaudio.*`` schema metadata of a gallery of ``root`` made with ``bundle``."""
    return {
        "bundle_hash": bundle.content_hash(),
        "audio_encoder_hash": audio_encoder_hash(bundle),
        "audio_source": audio_source,
        "data": str(root.resolve()),
        "embedding_dim": str(bundle.embedding_dim),
        "distance": bundle.distance,
    }


def write_gallery(path: Path, rows: pd.DataFrame, embeddings: np.ndarray, stamp: dict[str, str]) -> None:
    """Write rows + embeddings with ``geoaudio.*`` schema metadata atomically (temp file, os.replace)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = int(stamp["embedding_dim"])
    table = pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False)
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()), dim)
    table = table.append_column("embedding", column)
    table = table.replace_schema_metadata({f"{META_PREFIX}{k}".encode(): v.encode() for k, v in stamp.items()})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    encoder = bundle.audio_encoder().to(device)
    loader = DataLoader(_Recordings(dataset, keys), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate_recordings)
    with torch.no_grad(), tqdm(total=len(keys), desc="gallery", unit="rec", disable=not progress) as bar:
        for batch_keys, chunks, counts in loader:
            z = encoder.embed_recordings(chunks.to(device), counts, batch_size=64)
            on_batch(batch_keys, z.float().cpu().numpy())
            bar.update(len(batch_keys))


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

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.gallery",
        description="Embed every recording of a SoundingEarth-format folder once with a bundle's audio "
                    "encoder and store them in BUNDLE/gallery.parquet (key, location, title, description, "
                    "dominant class, audio path, embedding). Reruns embed only what is missing.")
    p.add_argument("--bundle", required=True, type=Path, help="model bundle folder (needs an audio encoder)")
    p.add_argument("--data", required=True, type=Path, help="SoundingEarth-format folder with metadata.csv")
    p.add_argument("--split", default="all", choices=("train", "val", "test", "all"),
                   help="which recordings (key mod 10 split; default: all)")
    p.add_argument("--audio-source", default="spectrogram", choices=("spectrogram", "audio"),
                   help="embed spectrograms/{key}.jpg (default) or decode audio/{key}.mp3")
    p.add_argument("--batch-size", type=int, default=16, help="recordings per batch (default 16)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--device", default="cpu", help="torch device for the encoder, e.g. cpu or cuda (default cpu)")
    p.add_argument("--save-every", type=int, default=2048,
                   help="write progress after this many new recordings (default 2048)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from model.bundle import load

    args = parse_args(argv)
    if args.batch_size < 1 or args.workers < 0 or args.save_every < 1:
        fail("--batch-size and --save-every must be positive and --workers not negative")
    bundle = load(args.bundle)
    audio_encoder_hash(bundle)  # fails early for bundles without an audio encoder
    update = build_gallery(bundle, args.data, args.split, args.audio_source, args.batch_size,
                           args.workers, args.device, save_every=args.save_every)
    if update.reason and update.embedded:
        print(update.reason)
    state = "wrote" if update.written else "unchanged:"
    print(f"{state} {update.path}: {update.total} recordings (embedded {update.embedded} new, kept "
          f"{update.kept}, dropped {update.dropped} no longer in {args.data})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
