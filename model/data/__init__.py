"""Dataset readers: SoundingEarth-format image/audio pairs, splits, transforms and caches."""
from model.data.audio_cache import LogmelCache, default_logmel_cache_dir
from model.data.collate import collate
from model.data.errors import DatasetError
from model.data.image_cache import default_image_cache_dir
from model.data.soundingearth import SoundingEarthDataset
from model.data.splits import read_split_file, reference_split, split_of_key, write_split_file
from model.data.transforms import EVAL_CROP, TRAIN_CROP, EvalTransform, TrainAugment, image_transform

__all__ = [
    "DatasetError", "EVAL_CROP", "EvalTransform", "LogmelCache", "SoundingEarthDataset", "TRAIN_CROP",
    "TrainAugment", "collate", "default_image_cache_dir", "default_logmel_cache_dir", "image_transform",
    "prepare_images", "read_split_file", "reference_split",
    "split_of_key", "write_split_file",
]


def __getattr__(name: str):
    # imported lazily so that ``python -m model.data.prepare`` does not find it pre-imported
    if name == "prepare_images":
        from model.data.prepare import prepare_images

        return prepare_images
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
