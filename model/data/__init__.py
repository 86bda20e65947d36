"""Dataset readers: SoundingEarth-format image/audio pairs, splits, transforms and caches.

The names below are imported on first use (PEP 562), so that a torch-free part of this package
(the fetch sources, the metadata reader) does not pull in torch through the package itself.
"""
from __future__ import annotations

import importlib

# ``collate`` is also the name of its submodule: bound here, the function shadows the module, which
# the import system would otherwise set as this attribute once anything imports model.data.collate.
from model.data.collate import collate

_HOMES = {
    "LogmelCache": "model.data.audio_cache", "default_logmel_cache_dir": "model.data.audio_cache",
    "DatasetError": "model.data.errors",
    "default_image_cache_dir": "model.data.image_cache", "SoundingEarthDataset": "model.data.soundingearth",
    "read_split_file": "model.data.splits", "reference_split": "model.data.splits",
    "split_of_key": "model.data.splits", "write_split_file": "model.data.splits",
    "EVAL_CROP": "model.data.transforms", "TRAIN_CROP": "model.data.transforms",
    "EvalTransform": "model.data.transforms", "TrainAugment": "model.data.transforms",
    "image_transform": "model.data.transforms", "prepare_images": "model.data.prepare",
}
__all__ = sorted([*_HOMES, "collate"])


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
