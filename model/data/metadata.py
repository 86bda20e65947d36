"""Reading a SoundingEarth-format folder: ``metadata.csv`` and the per-key files beside it.

Layout (the real dataset and ``model.synth`` pairs alike)::

    ROOT/metadata.csv           key (int), longitude, latitude (degrees, WGS84), title, ...
    ROOT/images/{key}.jpg       aerial image tile
    ROOT/spectrograms/{key}.jpg 8-bit log-mel spectrogram (the SoundingEarth encoding)
    ROOT/audio/{key}.mp3        raw recording (.wav, .ogg and .flac are accepted too)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from model.core.errors import one_line
from model.data.errors import DatasetError

METADATA_FILE = "metadata.csv"
REQUIRED_COLUMNS = ("key", "longitude", "latitude")
IMAGE_DIR, SPECTROGRAM_DIR, AUDIO_DIR = "images", "spectrograms", "audio"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPECTROGRAM_SUFFIXES = (".jpg", ".jpeg", ".png")
AUDIO_SUFFIXES = (".mp3", ".wav", ".ogg", ".flac")  # earlier suffixes win when a key has several

log = logging.getLogger(__name__)


def check_root(root: str | os.PathLike) -> Path:
    """The dataset folder as a Path; DatasetError when it is not an existing folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    return root


def read_metadata(root: str | os.PathLike) -> pd.DataFrame:
    """``ROOT/metadata.csv`` with integer, unique keys, indexed by key (the column is kept too).

    Raises DatasetError naming the file when it is missing, unreadable, lacks ``key``,
    ``longitude`` or ``latitude``, or holds non-integer or duplicate keys. Rows whose place is not
    a place (see :func:`valid_places`) are left out with one warning; none left is a DatasetError.
    """
    path = check_root(root) / METADATA_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: missing metadata file")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot parse CSV ({one_line(e)})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: no {', '.join(repr(c) for c in missing)} column "
                           f"(columns: {', '.join(map(str, table.columns))})")
    table["key"] = integer_keys(table["key"], path)
    duplicated = table["key"][table["key"].duplicated()]
    if len(duplicated):
        raise DatasetError(f"{path}: duplicate key {int(duplicated.iloc[0])} "
                           f"({len(duplicated)} duplicates in all)")
    return valid_places(table, path).set_index("key", drop=False)


def valid_places(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The rows of ``table`` with a real place: longitude in [-180, 180] and latitude in [-90, 90]
    degrees, both numbers (NaN, empty cells and text are not).

    A bad row is one bad item of the dataset: it is left out and reported in one warning naming
    ``path``, the count and the first key, and the rest goes on (a NaN place would otherwise reach
    distances, metrics and JSON as NaN). DatasetError when no row is left.
    """
    lon = pd.to_numeric(table["longitude"], errors="coerce")
    lat = pd.to_numeric(table["latitude"], errors="coerce")
    good = lon.between(-180.0, 180.0) & lat.between(-90.0, 90.0)  # NaN is never between
    if good.all():
        return table.assign(longitude=lon.astype(float), latitude=lat.astype(float))
    bad = table.loc[~good, "key"]
    if not good.any():
        raise DatasetError(f"{path}: no row has a valid longitude and latitude "
                           f"(degrees, -180..180 and -90..90; first: key {int(bad.iloc[0])})")
    log.warning("%s: %d rows without a valid longitude/latitude are left out (first: key %d)",
                path, len(bad), int(bad.iloc[0]))
    return table[good].assign(longitude=lon[good].astype(float), latitude=lat[good].astype(float))


def integer_keys(column: pd.Series, path: Path) -> pd.Series:
    """A ``key`` column as int64; DatasetError naming ``path`` and the first bad value otherwise."""
    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna() | (numbers != np.floor(numbers))
    if bad.any():
        raise DatasetError(f"{path}: 'key' must hold integers, found {column[bad].iloc[0]!r}")
    return numbers.astype(np.int64)


def files_by_key(folder: Path, suffixes: tuple[str, ...]) -> dict[int, Path]:
    """Files in ``folder`` named ``{integer key}{suffix}``, one per key (earlier suffixes win).

    A missing folder gives an empty mapping; other names are ignored. One directory listing, so
    it stays fast for the real dataset's ~50,000 files.
    """
    rank = {s: i for i, s in enumerate(suffixes)}
    found: dict[int, tuple[int, Path]] = {}
    if not folder.is_dir():
        return {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, dot, ext = entry.name.rpartition(".")
            suffix = f"{dot}{ext}".lower()
            if suffix not in rank or not stem.lstrip("-").isdigit() or entry.name.startswith("."):
                continue
            key = int(stem)
            if key not in found or rank[suffix] < found[key][0]:
                found[key] = (rank[suffix], Path(entry.path))
    return {key: path for key, (_, path) in found.items()}
