"""``run.json``: what a mapping run used and produced, and whether a rerun can skip it.

Fields: ``bundle`` (path, content hash), ``backend`` (name, description), ``versions``
(geoaudio, torch, onnxruntime, rasterio, GDAL, numpy, Python), ``input`` (``geo.raster.describe``
plus the file's size and modification time), ``options`` (the settings that change the products),
``grid`` (``TileGrid.to_dict``), ``scaling`` (``Scaling.to_dict``), ``products`` (file names),
``timings`` (seconds and tiles/s), ``warnings``, ``created`` (UTC, ISO 8601).

run.json is written last, atomically, after every product is in place, so its presence marks a
finished run. A rerun skips an input when run.json has the same bundle hash, options and input
fingerprint, and every listed product exists.
"""
from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from model.core.atomic import atomic_path

RUN_FILE = "run.json"
VERSION_PACKAGES = ("geoaudio", "torch", "onnxruntime", "rasterio", "numpy")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the results (None when not installed)."""
    import rasterio

    found: dict[str, str | None] = {}
    for name in VERSION_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["GDAL"] = rasterio.__gdal_version__
    found["python"] = platform.python_version()
    return found


def input_fingerprint(path: str | os.PathLike) -> dict[str, int]:
    """Size (bytes) and modification time (ns) of an input file: a changed file is mapped again."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_run_info(folder: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``folder/run.json`` atomically (adds ``created``)."""
    target = Path(folder) / RUN_FILE
    info = {**info, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(info, indent=2, default=jsonable) + "\n")
    return target


def read_run_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run.json of an output folder, or None when missing or unreadable."""
    try:
        info = json.loads((Path(folder) / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


def is_complete(folder: str | os.PathLike, bundle_hash: str, options: dict[str, Any],
                fingerprint: dict[str, int]) -> bool:
    """True when ``folder`` holds a finished run of the same bundle, options and input file."""
    info = read_run_info(folder)
    if info is None:
        return False
    same = (info.get("bundle", {}).get("content_hash") == bundle_hash
            and info.get("options") == json.loads(json.dumps(options, default=jsonable))
            and {k: info.get("input", {}).get(k) for k in fingerprint} == fingerprint)
    products = info.get("products") or []
    return same and bool(products) and all((Path(folder) / name).is_file() for name in products)


def jsonable(value: Any) -> Any:
    """``json.dumps`` fallback: paths and other objects as strings, NumPy scalars as numbers."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
