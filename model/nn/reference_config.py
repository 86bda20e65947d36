"""A SoundingEarth reference run's ``config.yml``: what it settles about a checkpoint's bundle.

The reference code (khdlr/SoundingEarth, ``config.py``) reads overrides of its defaults from a
YAML file kept with each run. The tensors of a checkpoint cannot say which loss trained them, yet
the loss decides how embeddings are compared: its ``distance_transform`` (``lib/loss_functions.py``)
is the identity for the triplet-style losses (Euclidean distance on raw embeddings) and L2
normalisation for the contrastive ones (cosine). This module reads the file and returns:

- ``distance``: ``euclidean`` or ``cosine`` from ``LossFunction`` (default ``TripletLoss``);
- ``reducer``: ``SoundReducer`` (default ``SoundMeanPool``, the mean over a recording's chunks,
  which is what geoaudio does);
- ``record``: the keys read, for the bundle's provenance;
- ``notes``: one line per setting taken or not reproducible, for the console.

A loss whose transform geoaudio has no distance for (``DeepHashingLoss``: the sign of each
component) or an unknown one is a one-line :class:`ReferenceConfigError`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.core.distance import COSINE, EUCLIDEAN
from model.core.errors import GeoaudioError, one_line

CONFIG_NAME = "config.yml"
EUCLIDEAN_LOSSES = ("TripletLoss", "BarlowTwins", "EuclideanContrastiveLoss", "SigmoidLoss")
COSINE_LOSSES = ("ContrastiveLoss", "ContrastiveLoss02", "LearnedContrastiveLoss", "SymmetricCL", "SymmetricCL02",
                 "SymmetricCLWithDistillation", "SymmetricCLWithMemory", "SymmetricCLWithMemoryAndDistillation")
DEFAULTS = {"LossFunction": "TripletLoss", "SoundReducer": "SoundMeanPool", "ImageReducer": "ImageMeanPool"}
MEAN_REDUCERS = ("SoundMeanPool",)


class ReferenceConfigError(GeoaudioError, ValueError):
    """A reference ``config.yml`` that cannot be read or used; the message names the file."""


@dataclass
class ReferenceConfig:
    """What a reference run's config settles (module doc)."""

    path: Path
    distance: str
    reducer: str
    record: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def find_config(checkpoint: str | os.PathLike) -> Path | None:
    """The ``config.yml`` beside ``checkpoint``, or None."""
    path = Path(checkpoint).parent / CONFIG_NAME
    return path if path.is_file() else None


def _load(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ReferenceConfigError(f"{path}: not a readable YAML file ({one_line(e)})") from None
    if not isinstance(data, dict):
        raise ReferenceConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def loss_distance(path: Path, loss: str) -> str:
    """The bundle distance of a reference loss (module doc); ReferenceConfigError otherwise."""
    if loss in EUCLIDEAN_LOSSES:
        return EUCLIDEAN
    if loss in COSINE_LOSSES:
        return COSINE
    if loss == "DeepHashingLoss":
        raise ReferenceConfigError(f"{path}: LossFunction DeepHashingLoss compares the signs of the embeddings, "
                                   "which no geoaudio distance does")
    raise ReferenceConfigError(f"{path}: unknown LossFunction {loss!r} (known: "
                               f"{', '.join(EUCLIDEAN_LOSSES + COSINE_LOSSES)})")


def read_reference_config(path: str | os.PathLike) -> ReferenceConfig:
    """Read a reference run's ``config.yml`` (module doc)."""
    path = Path(path)
    data = _load(path)
    settings = {**DEFAULTS, **data}
    loss, reducer = str(settings["LossFunction"]), str(settings["SoundReducer"])
    distance = loss_distance(path, loss)
    notes = [f"{path.name}: LossFunction {loss} -> {distance} distance"]
    if reducer not in MEAN_REDUCERS:
        notes.append(f"{path.name}: SoundReducer {reducer} is not reproduced; recordings are embedded as the mean "
                     "of their chunks (SoundMeanPool)")
    for key in ("MaxSamples", "LossArg", "LatentDim", "Epochs", "BatchSize", "AugmentationMode"):
        if key in data:
            notes.append(f"{path.name}: {key} {data[key]!r} recorded in the bundle's provenance")
    record = json.loads(json.dumps({k: v for k, v in data.items() if k != "DataRoot"},  # DataRoot: the authors' path
                                   default=str))
    return ReferenceConfig(path, distance, reducer, record, notes)
