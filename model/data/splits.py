"""Train / validation / test splits of SoundingEarth keys.

The reference scheme (Heidler et al.) splits by the last decimal digit of the integer key:
``key mod 10`` in {2, 5} is test, 7 is validation, every other digit is train (70/10/20 %).
Alternatively a split is an explicit CSV file with a ``key`` column.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from model.core.atomic import write_atomic
from model.core.errors import one_line
from model.data.errors import DatasetError
from model.data.metadata import integer_keys

SPLITS = ("train", "val", "test", "all")
ALIASES = {"validation": "val", "valid": "val"}
TEST_DIGITS = (2, 5)
VAL_DIGITS = (7,)


def normalise_split(name: str) -> str:
    """Canonical split name ("validation" -> "val"); DatasetError for unknown names."""
    canonical = ALIASES.get(name, name)
    if canonical not in SPLITS:
        raise DatasetError(f"unknown split {name!r}: expected one of {', '.join(SPLITS)}")
    return canonical


def split_of_key(key: int) -> str:
    """The reference split of one key: "test" if key mod 10 in (2, 5), "val" if 7, else "train"."""
    digit = int(key) % 10
    if digit in TEST_DIGITS:
        return "test"
    if digit in VAL_DIGITS:
        return "val"
    return "train"


def reference_split(keys: Iterable[int], split: str) -> list[int]:
    """The keys (in their given order) that the key-mod-10 scheme puts in ``split``."""
    split = normalise_split(split)
    keys = [int(k) for k in keys]
    if split == "all":
        return keys
    return [k for k in keys if split_of_key(k) == split]


def read_split_file(path: str | os.PathLike) -> list[int]:
    """Integer keys from the ``key`` column of a split CSV file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such split file")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot parse split CSV ({one_line(e)})") from None
    if "key" not in table.columns:
        raise DatasetError(f"{path}: split file has no 'key' column")
    return [int(k) for k in integer_keys(table["key"], path)]


def select_split(
    keys: Iterable[int], split: str, split_files: Mapping[str, str | os.PathLike] | None = None
) -> list[int]:
    """Keys of ``split``: from ``split_files[split]`` when split files are given (keys missing from
    ``keys`` are left out), else by the reference key-mod-10 scheme. Order follows ``keys``."""
    keys = [int(k) for k in keys]
    if split_files is None:
        return reference_split(keys, split)
    files = {normalise_split(name): path for name, path in split_files.items()}
    split = normalise_split(split)
    if split not in files:
        raise DatasetError(f"no split file for split {split!r} (given: {', '.join(sorted(files))})")
    wanted = set(read_split_file(files[split]))
    return [k for k in keys if k in wanted]


def write_split_file(keys: Iterable[int], path: str | os.PathLike) -> Path:
    """Write keys as a one-column ``key`` CSV, atomically (temp file in the same folder, then replace)."""
    frame = pd.DataFrame({"key": np.asarray(list(keys), dtype=np.int64)})
    return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
