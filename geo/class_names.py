"""Class names inside the class rasters (``soundscape.tif``, ``landcover.tif``).

GDAL's own place for the names of a class raster's values is the band's category names (or a
raster attribute table), but the GTiff and COG drivers of GDAL 3.10 keep both only in a PAM
sidecar (``<file>.aux.xml``), never inside the TIFF, and rasterio has no setter for either. So
the names travel as band-1 metadata, which GDAL stores in the TIFF's ``GDAL_METADATA`` tag and
the COG driver copies:

- ``class_names``: a JSON list, the name of class id ``i`` at index ``i``;
- ``class_<i>``: the name of class id ``i``, one item per class (readable without JSON, shown
  as they are in QGIS's layer metadata and by ``gdalinfo``).

The colour table of band 1 carries the colours (:func:`geo.products.class_colors`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import rasterio

CLASS_NAMES = "class_names"  # band-1 metadata item: JSON list of names, index = class id


def class_name_tags(classes: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Band-1 metadata ``{"class_names": JSON list, "class_<i>": name}`` from a head's class list
    (each ``{name, color}``; class id = position)."""
    names = [str(c["name"]) for c in classes]
    return {CLASS_NAMES: json.dumps(names), **{f"class_{i}": n for i, n in enumerate(names)}}


def read_class_names(path: str | os.PathLike) -> list[str]:
    """The class names of a class raster (``[]`` when it has none), from band 1's metadata."""
    with rasterio.open(path) as ds:
        text = ds.tags(1).get(CLASS_NAMES)
    return list(json.loads(text)) if text else []
