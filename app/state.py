"""Where the app keeps things, and the options it was started with.

- ``ROOT``: the project folder (the parent of ``app/``).
- The demo folder: ``$GEOAUDIO_DEMO_DIR``, else ``ROOT/demo`` (built by ``python -m app.demo``).
- The bundles folder: ``$GEOAUDIO_BUNDLES``, else ``ROOT/bundles``; each bundle folder directly
  inside it is offered by name (:mod:`app.access`).
- The cache folder: ``$GEOAUDIO_CACHE``, else ``~/.cache/geoaudio``; maps are cached in
  ``CACHE/maps/<key>/<stem>/`` with ``key = sha256(input id | bundle hash | backend)[:16]``
  (:func:`map_key`), uploads in ``CACHE/uploads/<sha256[:16]>/<name>``, query heatmaps in
  ``CACHE/queries/``.
- Options after ``--`` on the command line (``streamlit run app/main.py -- --allow-server-paths``)
  or ``GEOAUDIO_ALLOW_SERVER_PATHS=1``: whether a raster may be named by a path on the server.
"""
from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MAX_UPLOAD_MB = 200  # the GeoTIFF uploader's own max_upload_size (app/pickers.py); also .streamlit/config.toml's
# server.maxUploadSize, the most any upload box may take (Streamlit's default is 200 MB too)
MAX_AUDIO_MB = 50  # the audio uploader's own max_upload_size (app/panels.py); 10 minutes at most too
MAX_TILES = 20_000  # the app refuses to map more tiles than this (python -m geo.map has no limit)


@dataclass(frozen=True)
class AppOptions:
    """How the app was started: ``allow_server_paths`` lets users map any raster path on the server."""

    allow_server_paths: bool = False


def parse_options(argv: Sequence[str]) -> AppOptions:
    """Options from the script arguments (unknown ones are ignored) and the environment."""
    p = argparse.ArgumentParser(prog="streamlit run app/main.py --", add_help=False)
    p.add_argument("--allow-server-paths", action="store_true")
    args, _ = p.parse_known_args(list(argv))
    from_env = os.environ.get("GEOAUDIO_ALLOW_SERVER_PATHS", "") not in ("", "0", "false", "no")
    return AppOptions(allow_server_paths=args.allow_server_paths or from_env)


def demo_dir() -> Path:
    """The demo folder: ``$GEOAUDIO_DEMO_DIR`` or ``ROOT/demo``."""
    return Path(os.environ.get("GEOAUDIO_DEMO_DIR") or ROOT / "demo")


def cache_dir() -> Path:
    """The cache folder: ``$GEOAUDIO_CACHE`` or ``~/.cache/geoaudio`` (created on demand)."""
    return Path(os.environ.get("GEOAUDIO_CACHE") or Path.home() / ".cache" / "geoaudio")


def bundles_dir() -> Path:
    """The bundles folder: ``$GEOAUDIO_BUNDLES`` or ``ROOT/bundles`` (may be missing)."""
    return Path(os.environ.get("GEOAUDIO_BUNDLES") or ROOT / "bundles")


def landsat_sample() -> Path | None:
    """``../shared/data/geotiff/RGB.byte.tif`` next to the project, when present."""
    path = SHARED_DATA / "geotiff" / "RGB.byte.tif"
    return path if path.is_file() else None


def file_id(path: Path) -> str:
    """Identity of a file on the server: resolved path, size (bytes) and modification time (ns)."""
    st = path.stat()
    return f"path:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def sha256_hex(data: bytes) -> str:
    """sha256 of ``data`` in hex."""
    return hashlib.sha256(data).hexdigest()


def map_key(input_id: str, bundle_hash: str, backend: str) -> str:
    """Cache key of one map: ``sha256(input id | bundle hash | backend)[:16]``."""
    return sha256_hex(f"{input_id}|{bundle_hash}|{backend}".encode())[:16]


def map_root(input_id: str, bundle_hash: str, backend: str) -> Path:
    """``CACHE/maps/<key>``: the ``--out`` folder of ``geo.map`` for this input, bundle and backend."""
    return cache_dir() / "maps" / map_key(input_id, bundle_hash, backend)
