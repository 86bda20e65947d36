"""Does the gallery hear what an image shows? Class agreement of each image's nearest recordings.

For each query image i of a split, with c_i the metadata's ``dominant`` class of its own recording
(the synthetic world: its loudest sound source), the k nearest gallery recordings under the
bundle's distance are taken with the image's own recording left out; with n_ij the ``dominant``
class of the j-th of them:

    top1 = mean_i [n_i1 = c_i]                 topk = mean_i mean_j<=k [n_ij = c_i]

next to the baseline of always answering the most frequent query class, ``majority_share =
max_c mean_i [c_i = c]``. All three are fractions in [0, 1].
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model.bundle.gallery import load_gallery, nearest_in
from model.core.errors import GeoaudioError


class GalleryAgreementError(GeoaudioError, ValueError):
    """Data without dominant classes, or a gallery too small to leave a query's own recording out."""


def class_agreement(gallery: np.ndarray, gallery_keys: Sequence[int], gallery_classes: Sequence[str],
                    queries: np.ndarray, query_keys: Sequence[int], query_classes: Sequence[str],
                    distance: str, k: int = 5) -> dict[str, Any]:
    """``{"n", "k", "top1", "topk", "majority_class", "majority_share"}`` (module doc) for (N, D)
    query embeddings against an (M, D) gallery, M > k."""
    if len(queries) == 0 or not all(query_classes) or not all(gallery_classes):
        raise GalleryAgreementError("gallery agreement: every query and gallery row needs a dominant class")
    if len(gallery) <= k:
        raise GalleryAgreementError(f"gallery agreement: needs more than k = {k} gallery rows, got {len(gallery)}")
    indices, _ = nearest_in(gallery, queries, k + 1, distance)
    keys, classes = np.asarray(gallery_keys), np.asarray(gallery_classes, dtype=object)
    hits = []
    for row, own in zip(indices, query_keys):
        hits.append([classes[j] for j in row if keys[j] != own][:k])
    truth = np.asarray(query_classes, dtype=object)
    top1 = np.mean([h[0] == c for h, c in zip(hits, truth)])
    topk = np.mean([np.mean([n == c for n in h]) for h, c in zip(hits, truth)])
    majority, count = Counter(truth.tolist()).most_common(1)[0]
    return {"n": len(truth), "k": k, "top1": float(top1), "topk": float(topk),
            "majority_class": majority, "majority_share": count / len(truth)}


def gallery_agreement(bundle, data: str | Path, split: str = "test", k: int = 5,
                      audio_source: str = "spectrogram") -> dict[str, Any]:
    """:func:`class_agreement` of the images of ``split`` in ``data`` against the bundle's gallery
    (``audio_source``: where the folder's recordings are read from, as the gallery was built)."""
    from model.evaluation.embed import embed_folder

    rows, embeddings = load_gallery(bundle)
    if "dominant" not in rows.columns:
        raise GalleryAgreementError(f"{bundle.path}: the gallery has no dominant classes")
    emb = embed_folder(bundle, data, split=split, audio_source=audio_source, progress=False)
    result = class_agreement(embeddings, rows["key"].astype(int).tolist(), rows["dominant"].tolist(),
                             emb.image, emb.keys.tolist(), emb.dominant, bundle.distance, k)
    return {**result, "split": split, "gallery_size": len(rows), "data": str(data)}
