"""Which scene to map: the demo, the shared Landsat sample, an uploaded GeoTIFF, or a server path.

Uploads are checked before anything is mapped: the name must end in .tif/.tiff, the size must be
within :data:`app.state.MAX_UPLOAD_MB`, and the file must open as a georeferenced RGB raster
whose pixels can be read (``geo.raster.open_raster``) and hold at least one pixel that is not
nodata (``geo.raster.has_valid_pixels``, a decimated read). A bad upload is one :class:`UploadError`
or ``RasterError`` line and leaves no file behind. Good uploads are stored once per content in
``CACHE/uploads/<sha256[:16]>/<name>`` (written to a temporary file, then renamed).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.state import MAX_UPLOAD_MB, cache_dir, file_id, sha256_hex
from model.core.atomic import atomic_path
from model.core.errors import GeoaudioError

RASTER_SUFFIXES = (".tif", ".tiff")
DEMO = "Demo scene (synthetic, 0.5 m)"
LANDSAT = "Landsat sample (RGB.byte.tif, 300 m)"
UPLOAD = "Upload a GeoTIFF"
SERVER = "Path on the server"


class UploadError(GeoaudioError, ValueError):
    """An upload or path the app will not map; the message names the file and the problem."""


@dataclass(frozen=True)
class Scene:
    """A scene to map: ``label`` for the page, ``path`` of the raster, ``input_id`` for the cache
    (content hash for uploads, path + size + mtime for files on the server)."""

    label: str
    path: Path
    input_id: str


def sources(demo_scene: Path | None, landsat: Path | None, allow_server_paths: bool) -> list[str]:
    """The scene choices offered, in order: demo and Landsat when present, upload, server path when allowed."""
    out = [DEMO] if demo_scene is not None else []
    if landsat is not None:
        out.append(LANDSAT)
    out.append(UPLOAD)
    if allow_server_paths:
        out.append(SERVER)
    return out


def check_raster(path: Path) -> dict[str, Any]:
    """Open ``path`` as geo.map would (RasterError, one line, when it cannot be mapped; UploadError
    when every pixel is nodata); returns ``geo.raster.describe`` of it (size, bands, CRS, GSD ...)."""
    from geo.raster import describe, has_valid_pixels, open_raster

    with open_raster(path) as src:
        if not has_valid_pixels(src):
            raise UploadError(f"{path}: every pixel is nodata, nothing to map")
        return describe(src)


def safe_name(name: str) -> str:
    """A file name without folders or odd characters (letters, digits, ``._-`` kept)."""
    base = Path(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return cleaned[:120]


def check_upload_name(name: str, size: int, limit_mb: float = MAX_UPLOAD_MB) -> None:
    """UploadError for a name that is not a GeoTIFF, an empty file or one over ``limit_mb`` MB."""
    if Path(name).suffix.lower() not in RASTER_SUFFIXES:
        raise UploadError(f"{name}: not a GeoTIFF (expected a .tif or .tiff file)")
    if size == 0:
        raise UploadError(f"{name}: the file is empty")
    if size > limit_mb * 1024 * 1024:
        raise UploadError(f"{name}: {size / 1024 / 1024:.0f} MB is more than the upload limit of {limit_mb:g} MB")


def save_upload(name: str, data: bytes, folder: Path | None = None, limit_mb: float = MAX_UPLOAD_MB) -> Scene:
    """Check and store an uploaded GeoTIFF (module doc); UploadError or RasterError when it is bad."""
    check_upload_name(name, len(data), limit_mb)
    digest = sha256_hex(data)
    target_dir = (folder or cache_dir() / "uploads") / digest[:16]
    target = target_dir / safe_name(name)
    if not target.is_file():
        target_dir.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(target) as tmp:  # installed only once it reads as a raster
                tmp.write_bytes(data)
                try:
                    check_raster(tmp)
                except GeoaudioError as e:  # RasterError names the temporary file: name the upload instead
                    raise UploadError(_name_for_error(tmp, e, name)) from None
        except BaseException:
            _remove_empty(target_dir)
            raise
    return Scene(f"upload {name}", target, f"sha256:{digest}")


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _name_for_error(path: Path, error: Exception, name: str) -> str:
    """The error's message with the temporary file's path (and bare name) replaced by the uploaded name."""
    return str(error).replace(str(path), name).replace(path.name, name)


def server_scene(text: str) -> Scene:
    """A raster named by a path on the server (only offered with --allow-server-paths)."""
    path = Path(text.strip()).expanduser()
    if not text.strip():
        raise UploadError("enter the path of a GeoTIFF on the server")
    if not path.is_file():
        raise UploadError(f"{path}: no such file on the server")
    check_raster(path)
    return Scene(str(path), path, file_id(path))


def file_scene(label: str, path: Path) -> Scene:
    """A scene for a known file (the demo or the Landsat sample)."""
    return Scene(label, path, file_id(path))
