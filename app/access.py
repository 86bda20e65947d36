"""What a visitor of the app can reach on the server, and what the page says about the server.

Without ``--allow-server-paths`` (the default):

- bundles: only the demo bundle and the bundle folders directly inside the bundles folder
  (``$GEOAUDIO_BUNDLES``, default ``bundles/``; :func:`listed_bundles`) are offered, by folder
  name, in a radio. No box takes a folder path, so a visitor can neither load another folder nor
  learn whether one exists; ``~user`` is never expanded.
- scenes: the demo scene, the Landsat sample and uploads (stored under the cache, :mod:`app.scenes`).
- gallery recordings: only audio files inside the gallery's data folder, after resolving symlinks
  and ``..`` (``model.bundle.gallery.confined_audio_path``), are played.
- messages: every line the page shows from an error or a warning goes through :func:`public`,
  which writes the app's own folders as short names (``<cache>``, ``<demo>``, ``<bundles>``,
  ``<shared data>``, ``<app>``, the chosen bundle as its name) and any other absolute path as its
  last component, so no message shows a server-side path.

With ``--allow-server-paths`` (or ``GEOAUDIO_ALLOW_SERVER_PATHS=1``) the page says so
(:data:`SERVER_PATHS_NOTE`), a visitor may name any GeoTIFF or bundle folder on the server, and
messages keep their paths.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from app.state import ROOT, SHARED_DATA, bundles_dir, cache_dir, demo_dir, parse_options
from model.bundle.files import META_FILE

SERVER_PATHS_NOTE = ("This app was started with --allow-server-paths: visitors can map any GeoTIFF and load any "
                     "bundle folder on this server by its path.")
# An absolute POSIX path not glued to a word, another path or a URL scheme ("3/9", "wav/mp3", "https://" are not).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/>:-])/[^\s'\"`,;:()\[\]<>]+")


def server_paths_open() -> bool:
    """Whether the app was started with ``--allow-server-paths`` (or its environment variable)."""
    return parse_options(sys.argv[1:]).allow_server_paths


def listed_bundles(folder: Path) -> dict[str, Path]:
    """Folder name -> path of each bundle folder (one holding ``bundle.json``) directly inside
    ``folder``, sorted by name; hidden folders (names starting with ``.``, such as staging
    folders) are skipped; {} when ``folder`` is missing."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return {}
    return {p.name: p for p in entries if not p.name.startswith(".") and (p / META_FILE).is_file()}


def _app_folders() -> dict[Path, str]:
    """The app's own folders and the short names messages use for them."""
    return {bundles_dir(): "<bundles>", demo_dir(): "<demo>", cache_dir(): "<cache>",
            SHARED_DATA: "<shared data>", ROOT: "<app>"}


def public(message: str, names: dict[Path, str] | None = None) -> str:
    """``message`` as the page may show it: unchanged with ``--allow-server-paths``; otherwise each
    folder of ``names`` (say the chosen bundle -> its label) and of the app's own folders is written
    as its short name (longest first; also as its resolved path), and any other absolute path as
    its last component."""
    if server_paths_open():
        return message
    folders = {**_app_folders(), **(names or {})}
    spelled = {}
    for path, short in folders.items():
        for form in {str(path), os.path.realpath(path)}:
            if form != os.sep:
                spelled[form] = short
    for form in sorted(spelled, key=len, reverse=True):
        message = message.replace(form, spelled[form])
    return _ABSOLUTE_PATH.sub(lambda m: Path(m.group()).name or "/", message)
