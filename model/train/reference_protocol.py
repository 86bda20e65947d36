"""The reference protocol of scene classification (``python -m model.finetune classify --protocol reference``).

What the SoundingEarth reference code does for UC Merced, AID and NWPU-RESISC45
(khdlr/SoundingEarth ``downstream/downstream_task.py``, ``ucmerced.py``, ``aid.py``, ``resisc45.py``),
and where it differs from our default protocol (docs/fidelity.md):

- model: the pretrained image encoder *with* its projection (the bundle's ``fc``, 128-d for the
  published weights) and the loss's distance transform (L2 normalisation for cosine bundles),
  then one linear layer to K classes; every weight trains (:class:`model.train.classify.ProjectionClassifier`). An
  init without a projection (random, a torchvision weights file) is the backbone, global average
  pooling and the linear layer, as the reference's ``from_resnet``;
- optimisation: Adam at 1e-3, constant, no weight decay, 5 epochs (:data:`CLASSIFY`);
- split: the images in folder order (classes sorted, files sorted by name), even positions for
  training, odd ones for testing (:func:`even_odd_split`);
- inputs: the whole image at its native size (UC Merced resized to 256 x 256 px, AID 600 px,
  RESISC45 256 px), ImageNet-normalised, no augmentation; we use the images' most common side
  (:func:`native_side`) and our centre-square crop, which equals the reference's resize wherever an
  image is square;
- batch size: 8 for AID's 600 px images, 48 for the 256 px sets (:func:`batch_size_for`).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import numpy as np

CLASSIFY = {"epochs": 5, "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant", "augment": False}
LARGE_SIDE_PX = 512  # images at least this large get the reference's small batch (AID)
SMALL_BATCH, LARGE_BATCH = 8, 48


def even_odd_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices 0, 2, 4 ..., test indices 1, 3, 5 ...) of ``n`` images in folder order."""
    return np.arange(0, n, 2), np.arange(1, n, 2)


def native_side(paths: Sequence[str | os.PathLike], sample: int = 256) -> int:
    """The most common shorter side in px among (at most ``sample``, evenly spaced) images, read
    from their headers (no pixels decoded)."""
    from PIL import Image

    step = max(1, len(paths) // max(1, sample))
    sides = Counter()
    for path in list(paths)[::step]:
        with Image.open(path) as im:
            sides[min(im.size)] += 1
    return int(sides.most_common(1)[0][0])


def batch_size_for(side: int) -> int:
    """The reference's batch size for images of ``side`` px: 8 from :data:`LARGE_SIDE_PX` up, else 48."""
    return SMALL_BATCH if side >= LARGE_SIDE_PX else LARGE_BATCH


# ---- DeepGlobe land cover (``python -m model.finetune segment --protocol reference``) -------------
# Reference: khdlr/SoundingEarth ``downstream/deepglobe.py``: every 512 px patch at stride 347 px of
# the training tiles, no augmentation, batch 16, Adam 1e-3 constant, 5 epochs; whole 2448 px tiles
# at test time; OA the mean of per-tile accuracies, mIoU over all six classes; DeepLabV3+ with ASPP
# rates 6/12/18 (ordinary, not separable, convolutions), 256 channels; the tiles listed in
# ``valid_ids.txt`` (one id per line) are the test split.

SEGMENT = {"lr": 1e-3, "weight_decay": 0.0, "schedule": "constant", "batch_size": 16, "crop_size": 512,
           "patch_stride": 347, "decoder": {"decoder_channels": 256, "decoder_atrous_rates": [6, 12, 18],
                                            "decoder_aspp_separable": False}}
SPLIT_FILE = "valid_ids.txt"


def read_split_ids(path: str | os.PathLike) -> set[str]:
    """The tile ids of a reference split file: one integer id per line (blank lines ignored);
    DatasetError naming the file and line otherwise."""
    from model.data.errors import DatasetError

    ids = set()
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the split file ({e})") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            if not line.strip().isdigit():
                raise DatasetError(f"{path}: line {number} is not a tile id: {line.strip()!r}")
            ids.add(str(int(line.strip())))
    return ids
