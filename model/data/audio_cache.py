"""Log-mel spectrograms of raw recordings, decoded once and kept as ``.npy`` files.

Decoding an MP3 and computing its mel spectrogram costs far more than a training step's share, so
the first read of a recording stores its ``(n_mels, T)`` spectrogram as float16 in
``CACHE/{key}.npy`` and every later read loads that file. The cache folder is specific to one
:class:`~model.bundle.audio.AudioConfig`: its default name carries a hash of the config
(``ROOT/.cache/logmel-<12 hex digits>``) and ``config.json`` inside records the config itself.
Float16 keeps about 3 significant digits, far finer than the 8-bit spectrogram JPEGs.
Writes are atomic (:mod:`model.core.atomic`: unique temporary names, then ``os.replace``), so
concurrent DataLoader workers and killed runs never leave a half-written file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from model.bundle.audio import AudioConfig, load_logmel
from model.core.atomic import write_atomic, write_text_atomic
from model.data.errors import DatasetError

CONFIG_FILE = "config.json"


def config_hash(config: AudioConfig) -> str:
    """First 12 hex digits of the SHA-256 of the config as sorted JSON."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_logmel_cache_dir(root: str | os.PathLike, config: AudioConfig) -> Path:
    """``ROOT/.cache/logmel-<config hash>``."""
    return Path(root) / ".cache" / f"logmel-{config_hash(config)}"


class LogmelCache:
    """Computes a recording's log-mel spectrogram once per config and reuses it afterwards."""

    def __init__(self, folder: str | os.PathLike, config: AudioConfig) -> None:
        self.folder = Path(folder)
        self.config = config
        self.decoded = 0  # recordings decoded (not read from the cache) by this object
        self._checked = False

    def path(self, key: int) -> Path:
        return self.folder / f"{int(key)}.npy"

    def load(self, key: int, audio_path: str | os.PathLike) -> np.ndarray:
        """(n_mels, T) float32 spectrogram of ``audio_path``, from the cache when present.

        The value returned on a cache miss is the float16-rounded one that was stored, so that
        first and later reads agree exactly. AudioError from decoding propagates unchanged.
        """
        if not self._checked:
            self.check()
        path = self.path(key)
        if path.is_file():
            try:
                return np.load(path, allow_pickle=False).astype(np.float32)
            except (OSError, ValueError, EOFError):
                pass  # unreadable entry: recompute and replace it
        stored = load_logmel(audio_path, self.config).astype(np.float16)
        self.decoded += 1
        try:
            self._store(path, stored)
        except OSError as e:
            raise DatasetError(f"{self.folder}: cannot write the log-mel cache ({e.strerror or e}); "
                               "pass cache_dir= a writable folder") from None
        return stored.astype(np.float32)

    def check(self) -> None:
        """DatasetError (naming ``config.json``) if the folder holds another config's spectrograms."""
        record = self.folder / CONFIG_FILE
        if record.is_file():
            try:
                found = json.loads(record.read_text())
            except ValueError:
                found = None
            if found != json.loads(json.dumps(self.config.to_dict())):
                raise DatasetError(f"{record}: log-mel cache was made with another audio config; "
                                   "use another cache_dir or delete this folder")
        self._checked = True

    def _store(self, path: Path, logmel: np.ndarray) -> None:
        """Write one entry atomically, creating the folder and its ``config.json`` on first use."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = self.folder / CONFIG_FILE
        if not record.is_file():
            write_text_atomic(record, json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")
        write_atomic(path, lambda tmp: np.save(tmp, logmel))  # the temporary name ends in .npy too
