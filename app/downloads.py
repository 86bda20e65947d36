"""Download buttons for every product of the current map (COGs, GeoPackages, run.json, heatmap).

Files are read only when a button is clicked (Streamlit's deferred ``data`` callable), so large
products cost nothing until asked for. Download names are ``<scene stem>_<product>``.
"""
from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

MIME = {".tif": "image/tiff", ".gpkg": "application/geopackage+sqlite3", ".json": "application/json"}
RUN_FILE = "run.json"


def product_files(map_dir: Path) -> list[Path]:
    """The products listed in ``map_dir/run.json`` that exist, then run.json itself."""
    try:
        names = json.loads((map_dir / RUN_FILE).read_text()).get("products", [])
    except (OSError, ValueError):
        names = []
    files = [map_dir / n for n in names if (map_dir / n).is_file()]
    return files + ([map_dir / RUN_FILE] if (map_dir / RUN_FILE).is_file() else [])


def human_size(n: int) -> str:
    """Bytes as B / kB / MB (powers of 1024)."""
    for unit in ("B", "kB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} MB"


def _reader(path: Path):
    return lambda: path.read_bytes()


def download_buttons(files: list[Path], stem: str, columns: int = 4) -> None:
    """One ``st.download_button`` per file, laid out in ``columns`` columns."""
    cols = st.columns(columns)
    for i, path in enumerate(files):
        with cols[i % columns]:
            st.download_button(f"{path.name} ({human_size(path.stat().st_size)})", data=_reader(path),
                               file_name=f"{stem}_{path.name}", mime=MIME.get(path.suffix, "application/octet-stream"),
                               key=f"download-{path.name}", on_click="ignore", width="stretch")
