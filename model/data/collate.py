"""Batching SoundingEarth samples whose recordings have different numbers of audio chunks."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def collate(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Merge samples from :class:`SoundingEarthDataset` into one batch; unreadable samples (None,
    already reported by the dataset) are left out, and a batch of none is None.

    Returns ``image`` (B, 3, S, S); ``audio`` (sum of n_i, 1, n_mels, frames), the chunks of all
    recordings concatenated in sample order; ``counts`` the list [n_1, ..., n_B] of chunks per
    recording (so ``AudioEncoder.embed_recordings(audio, counts)`` gives one embedding per
    sample); ``key`` int64 (B,); ``location`` (B, 2) lon/lat degrees; ``dominant`` a list of
    class names when every sample has one.
    """
    import torch  # here: the package imports this function without starting torch

    if not samples:
        raise ValueError("collate: empty batch")
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "audio": torch.cat([s["audio"] for s in samples]),
        "counts": [int(s["audio"].shape[0]) for s in samples],
        "key": torch.tensor([int(s["key"]) for s in samples], dtype=torch.long),
        "location": torch.stack([s["location"] for s in samples]),
    }
    if all("dominant" in s for s in samples):
        batch["dominant"] = [s["dominant"] for s in samples]
    return batch
