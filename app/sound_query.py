"""Query a mapped scene by sound: the query vector, the similarity heatmap, the gallery's recordings.

The query vector ``v`` is one of

- an uploaded recording (wav, mp3, ogg, flac; at most :data:`app.state.MAX_AUDIO_MB` MB, the
  uploader's own limit, and :data:`model.bundle.audio.QUERY_MAX_SECONDS`, 10 minutes, read from
  the file's header before anything is decoded: :data:`AUDIO_LIMITS`) embedded
  by the bundle's audio encoder through the chosen backend (``embed_audio_file``: the mean of its
  chunk embeddings);
- a recording of the bundle's gallery (its stored embedding; nothing is recomputed);
- a soundscape class (its prototype, ``geo.query.class_vector``);
- a description matched against the gallery's titles and descriptions (TF-IDF, :mod:`geo.text_query`):
  the score-weighted mean of the stored embeddings of at most ``DEFAULT_TOP_K`` (10) matching
  recordings (:func:`text_vector`).

The heatmap is ``geo.query.query_embeddings(OUT/<stem>/embeddings.tif, v, distance)`` (for a mapped
region, over its embeddings mosaic ``OUT/mosaic/embeddings.vrt``, ranked over the whole region): band
0 the rank-normalised similarity 0..1 (1 = the cell most like the sound), band 1 the embedding distance,
band 2 the probability that the cell and the sound come from the same place (the bundle's
calibration; NaN without one).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.state import MAX_AUDIO_MB, cache_dir
from model.bundle.audio import AUDIO_FORMATS, QUERY_MAX_SECONDS
from model.core.errors import GeoaudioError, one_line

AUDIO_TYPES = ("wav", "mp3", "ogg", "flac")
AUDIO_LIMITS = f"at most {MAX_AUDIO_MB} MB and {QUERY_MAX_SECONDS / 60:g} minutes"  # what the page states


class AudioUploadError(GeoaudioError, ValueError):
    """An audio upload the app cannot use; the message names the file and the problem."""


@dataclass(frozen=True)
class Gallery:
    """A bundle's gallery: ``rows`` (key, title, audio_path ...), ``embeddings`` (N, D), the
    folder the audio paths are relative to (None when the gallery does not record it) and how many
    rows lost their audio at load because it leaves that folder (``model.bundle.gallery``)."""

    rows: pd.DataFrame
    embeddings: np.ndarray
    data_root: Path | None
    refused: int = 0

    def audio_file(self, key: int) -> Path | None:
        """The playable recording of gallery key ``key``: an audio file (wav, mp3, ogg, flac) inside
        the data folder once symlinks and ``..`` are resolved (checked again here, when the path
        becomes a file to serve); None when there is none on this machine."""
        from model.bundle.gallery import confined_audio_path

        match = self.rows.index[self.rows["key"].astype(int) == int(key)]
        if len(match) == 0 or self.data_root is None:
            return None
        path = confined_audio_path(self.data_root, str(self.rows.loc[match[0], "audio_path"] or ""))
        playable = path is not None and path.suffix.lower().lstrip(".") in AUDIO_TYPES
        return path if playable and path.is_file() else None

    def title(self, key: int) -> str:
        """The title of gallery key ``key`` ("" when unknown)."""
        match = self.rows.index[self.rows["key"].astype(int) == int(key)]
        return str(self.rows.loc[match[0], "title"]) if len(match) else ""

    def vector(self, key: int) -> np.ndarray:
        """The stored embedding (D,) of gallery key ``key``."""
        match = np.flatnonzero(self.rows["key"].astype(int).to_numpy() == int(key))
        if len(match) == 0:
            raise KeyError(f"gallery has no recording {key}")
        return np.asarray(self.embeddings[match[0]], np.float32)


def load_gallery(bundle: Any) -> Gallery | None:
    """The bundle's gallery, or None when it has none (GalleryError when it is unusable)."""
    from model.bundle.gallery import gallery_path, load_gallery as load_rows, read_gallery_file

    path = gallery_path(bundle)
    if not path.is_file():
        return None
    rows, embeddings = load_rows(bundle)
    data = read_gallery_file(path)[2].get("data")
    return Gallery(rows.reset_index(drop=True), embeddings, Path(data) if data else None,
                   int(rows.attrs.get("refused_audio", 0)))


def text_vector(gallery: Gallery, text: str) -> tuple[np.ndarray, list[Any]]:
    """The query vector (D,) of a description over the gallery and the recordings it is made of
    (``geo.text_query.TextMatch``: key, title, score, weight; best first). QueryError (one line)
    when no recording's title or description matches."""
    from geo.text_query import DEFAULT_TOP_K, text_query_vector

    return text_query_vector(gallery.rows, gallery.embeddings, text, DEFAULT_TOP_K)


def check_audio_upload(name: str, size: int, limit_mb: float = MAX_AUDIO_MB) -> None:
    """AudioUploadError for an unsupported extension, an empty file or one over ``limit_mb`` MB."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in AUDIO_TYPES:
        raise AudioUploadError(f"{name}: unsupported audio type (use {', '.join(AUDIO_TYPES)})")
    if size == 0:
        raise AudioUploadError(f"{name}: the file is empty")
    if size > limit_mb * 1024 * 1024:
        raise AudioUploadError(f"{name}: {size / 1024 / 1024:.0f} MB is more than the audio limit of {limit_mb:g} MB")


def embed_upload(backend: Any, name: str, data: bytes) -> np.ndarray:
    """Embedding (D,) of an uploaded recording; AudioUploadError (one line, naming the upload) when
    it is not a supported, decodable, non-silent recording."""
    check_audio_upload(name, len(data))
    folder = cache_dir() / "queries"
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".audio.", suffix=Path(name).suffix.lower(), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return np.asarray(backend.embed_audio_file(tmp, QUERY_MAX_SECONDS), np.float32)
        except GeoaudioError as e:  # AudioError and friends name the temporary file: name the upload
            message = one_line(e)
            if "cannot decode audio" in message:  # a decoder's own words (pipes, formats): say what it means
                raise AudioUploadError(f"{name}: not a readable audio file ({AUDIO_FORMATS})") from None
            raise AudioUploadError(message.replace(tmp, name).replace(Path(tmp).name, name)) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def heatmap(embeddings: Path, vector: np.ndarray, distance: str,
            calibration: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``geo.query.query_embeddings`` over ``embeddings`` (a map's embeddings.tif, or a region's
    embeddings mosaic VRT, which GDAL reads as one raster): (3, rows, cols) (similarity, distance,
    probability of the same place with the bundle's ``calibration``) and profile."""
    from geo.query import query_embeddings

    return query_embeddings(embeddings, vector, distance, calibration)


def best_cells(similarity: np.ndarray, k: int = 3) -> list[tuple[int, int, float]]:
    """The ``k`` cells with the highest similarity: (row, col, similarity), best first; NaN skipped."""
    flat = np.where(np.isfinite(similarity), similarity, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    cols = similarity.shape[1]
    return [(int(i // cols), int(i % cols), float(flat[i])) for i in order if np.isfinite(flat[i])]


def answer_cells(array: np.ndarray, k: int = 3, likely: float | None = None) -> list[tuple[int, int, float]]:
    """The cells that answer a query: the ``k`` :func:`best_cells` of the similarity band; with a
    calibrated heatmap (band 3 not all NaN) only those whose probability of the same place is at
    least ``likely`` (``geo.query.LIKELY``), so none when no cell is likely."""
    from geo.query import LIKELY

    likely = LIKELY if likely is None else likely
    probability = array[2]
    best = best_cells(array[0], k)
    if not np.isfinite(probability).any():
        return best
    return [(r, c, s) for r, c, s in best if probability[r, c] >= likely]


def heat_name(label: str, key: str) -> str:
    """The heatmap file's name: ``heat-<label>-<key[:8]>.tif``, the label (what was asked: a
    recording's stem, ``gallery-<key>``, ``class-<name>``, ``text-<words>``) with anything but letters, digits, ``.``,
    ``_`` and ``-`` replaced by ``-`` and cut to 40 characters, so a download says what it shows."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.")[:40] or "query"
    return f"heat-{slug}-{key[:8]}.tif"


def query_key(vector: np.ndarray, map_dir: Path) -> str:
    """``sha256(vector bytes | map folder)[:16]``: names a query's heatmap file."""
    from app.state import sha256_hex

    return sha256_hex(np.asarray(vector, np.float32).tobytes() + str(map_dir).encode())[:16]


def save_heatmap(array: np.ndarray, profile: dict[str, Any], out: Path, what: str) -> Path:
    """Write the heatmap as ``out`` (two-band float32 COG, atomically) for download."""
    from geo.query import write_heatmap

    out.parent.mkdir(parents=True, exist_ok=True)
    return write_heatmap(array, profile, out, {"geoaudio_query": what})
