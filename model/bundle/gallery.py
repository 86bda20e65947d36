"""The gallery file of a bundle: ``BUNDLE/gallery.parquet``, its columns and metadata, reading it and
finding the nearest recordings. Torch-free; building a gallery is :mod:`model.heads.gallery`.

``python -m model.gallery --bundle B --data DIR`` embeds each recording with the bundle's audio
encoder (all of its whole chunks, averaged: ``AudioEncoder.embed_recordings``) and writes
``B/gallery.parquet`` (atomically, :mod:`model.core.atomic`):

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

Audio paths never leave the data folder: :func:`load_gallery` resolves every ``audio_path``
against the recorded data folder (``..``, absolute paths and symlinks included,
:func:`confined_audio_path`) and drops the audio of any row whose recording lies outside it
(``audio_path`` set to "", one warning per load naming the count; the row's embedding stays
usable). The writer only records files under ``DIR/audio``, so only a hand-made or tampered
gallery (or a symlink pointing out of the folder) loses audio this way.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from model.bundle.files import GALLERY_FILE
from model.core.atomic import write_atomic
from model.core.distance import pairwise_distance, unit_rows
from model.core.errors import GeoaudioError, one_line

META_PREFIX = "geoaudio."
TEXT_COLUMNS = ("title", "description")
COLUMNS = ("key", "longitude", "latitude", "title", "description", "dominant", "audio_path")
MAX_BLOCK_ELEMENTS = 1 << 24  # distances computed at once by `nearest` (16 M float64 = 128 MiB)
COLLAPSED_COSINE = 0.99  # mean pairwise cosine similarity from which a gallery counts as collapsed


class GalleryError(GeoaudioError, ValueError):
    """A gallery that cannot be built or used; the message names the file or folder."""


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
        raise GalleryError(f"{path}: unreadable gallery ({one_line(e)})") from None
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
    (``attrs["data"]``: the folder ``audio_path`` is relative to; ``attrs["refused_audio"]``: how many
    rows lost their audio because it leaves that folder, module doc). GalleryError when the gallery is
    missing or was made with another audio encoder."""
    rows, embeddings = _current(bundle)
    rows = rows.copy()
    rows.attrs.update(read_gallery_file(gallery_path(bundle))[2])
    _confine_audio_paths(rows, gallery_path(bundle))
    return rows, np.array(embeddings)


def confined_audio_path(data: str | os.PathLike, audio_path: str,
                        _folders: dict[str, str] | None = None) -> Path | None:
    """The real path of ``audio_path`` (relative to the data folder ``data``) when it stays inside
    that folder once ``..``, absolute paths and symlinks are resolved; None when it leaves it or is "".

    The path returned is the one checked (the data folder's real path, the normalised relative
    path, each folder and the file's own symlink resolved), so serving it serves what was checked.
    ``_folders`` caches real folder paths within one load (the audio of a gallery shares a few folders).
    """
    rel = os.path.normpath(str(audio_path)) if audio_path else ""
    if rel in ("", ".", "..") or os.path.isabs(rel) or rel.startswith(".." + os.sep):
        return None
    folders = {} if _folders is None else _folders
    root = _real_folder(os.fspath(data), folders)
    parent, name = os.path.split(os.path.join(root, rel))
    real = os.path.join(_real_folder(parent, folders), name)
    if os.path.islink(real):
        real = os.path.realpath(real)
    return Path(real) if real.startswith(root.rstrip(os.sep) + os.sep) else None


def _real_folder(folder: str, cache: dict[str, str]) -> str:
    """``os.path.realpath(folder)``, remembered in ``cache``."""
    if folder not in cache:
        cache[folder] = os.path.realpath(folder)
    return cache[folder]


def _confine_audio_paths(rows: pd.DataFrame, path: Path) -> None:
    """Set ``audio_path`` to "" in every row whose recording leaves the data folder (in place);
    warn once with the count; ``rows.attrs["refused_audio"]`` is that count."""
    data = rows.attrs.get("data")
    rows.attrs["refused_audio"] = 0
    if "audio_path" not in rows.columns or not data:
        return
    folders: dict[str, str] = {}
    named = rows["audio_path"].fillna("").astype(str)
    refused = np.array([bool(p) and confined_audio_path(data, p, folders) is None for p in named], dtype=bool)
    count = int(refused.sum())
    rows.attrs["refused_audio"] = count
    if count:
        rows.loc[refused, "audio_path"] = ""
        warnings.warn(f"{path}: {count} of {len(rows)} audio paths leave the data folder {data}; "
                      "their recordings are not played", stacklevel=3)


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


# ---- writing ---------------------------------------------------------------------------------

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
    """Write rows + embeddings with ``geoaudio.*`` schema metadata atomically (:mod:`model.core.atomic`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = int(stamp["embedding_dim"])
    table = pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False)
    column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), pa.float32()), dim)
    table = table.append_column("embedding", column)
    table = table.replace_schema_metadata({f"{META_PREFIX}{k}".encode(): v.encode() for k, v in stamp.items()})
    write_atomic(path, lambda tmp: pq.write_table(table, str(tmp)))


# ---- spread ----------------------------------------------------------------------------------

def mean_pairwise_cosine(embeddings: np.ndarray) -> float:
    """Mean cosine similarity of the rows of ``embeddings`` (N, D) over all pairs i != j.

    With unit rows u_i (:func:`~model.core.distance.unit_rows`), sum_{i != j} u_i.u_j =
    |sum_i u_i|^2 - N, so the mean is ``(|sum_i u_i|^2 - N) / (N (N - 1))``: exact, in O(N D).
    1 when every row points the same way (a collapsed encoder), near 0 for rows spread in all
    directions, down to -1 / (N - 1). NaN for fewer than two rows.
    """
    u = unit_rows(np.asarray(embeddings).reshape(len(embeddings), -1))
    n = len(u)
    if n < 2:
        return float("nan")
    total = u.sum(axis=0)
    return float((total @ total - (u * u).sum()) / (n * (n - 1)))


def collapse_warning(embeddings: np.ndarray) -> str | None:
    """One line when the gallery's embeddings are collapsed (:func:`mean_pairwise_cosine` >=
    :data:`COLLAPSED_COSINE`): the audio encoder then gives every recording nearly the same
    embedding, so its maps and queries say little. None otherwise."""
    spread = mean_pairwise_cosine(embeddings)
    if not spread >= COLLAPSED_COSINE:
        return None
    return (f"this bundle's audio embeddings are collapsed: the mean cosine similarity between its {len(embeddings)} "
            f"gallery recordings is {spread:.4f} (collapsed from {COLLAPSED_COSINE}), so its sound maps and "
            "queries hardly tell sounds apart")
