"""Fit a bundle's soundscape head from audio metadata: ``python -m model.soundscape --bundle B --data DIR``.

1. Classes: every image/audio pair of DIR is assigned a sound class from its *audio* metadata
   (:mod:`model.data.sound_classes`: the synthetic world's ``dominant`` column, or keyword rules on
   title and description from a YAML file); pairs matching no class are left out and counted.
2. Prototypes: for class k, the mean audio embedding of its training-split recordings (key mod 10
   scheme, :mod:`model.data.splits`), ``p_k = mean_i a_i``; for cosine bundles the mean of the
   L2-normalised embeddings, normalised again, ``p_k = m_k / ||m_k||`` with ``m_k = mean_i a_i/||a_i||``.
3. Temperature: an image tile's class scores are ``s_k(z) = softmax_k(-d(z, p_k) / T)`` with the
   bundle's distance d (:mod:`model.nn.soundscape_head`). T minimises the mean negative log-likelihood
   of each validation recording's class given its co-located image embedding,
   ``NLL(T) = mean_n [log sum_k exp(-d_nk / T) + d_ny / T]``. NLL is convex in ``beta = 1 / T``, so
   a golden-section search over ``log beta`` in ``[1e-3, 1e3] / std(d)`` finds the minimum.
   Without validation pairs the training pairs are used (the report says so).
4. Report: per-class counts per split, accuracy of image -> class (``argmin_k d(z, p_k)``) on the
   validation and test pairs against the recordings' classes, next to the class-frequency
   baseline (always the most frequent training class), and the NLL at T next to the NLL of the
   training class frequencies.

5. Query calibration: on the same pairs, the probability that an image and a recording come from
   the same place given their distance (:mod:`model.heads.query_calibration`), which ``geo.query``
   writes as the heatmap's ``probability`` band.

The head is written into the bundle (``meta["heads"]["soundscape"]``, with ``query_calibration``,
and tensor ``soundscape.prototypes``, replacing an earlier soundscape head).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.core.distance import COSINE, pairwise_distance, unit_rows
from model.core.errors import GeoaudioError
from model.data.sound_classes import SoundClasses, class_ids, default_classes
from model.heads.query_calibration import fit_query_calibration

SPLITS = ("train", "val", "test")
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
BETA_RANGE = (1e-3, 1e3)  # search range of 1 / T, in units of 1 / std(distances)
SEARCH_STEPS = 80


class SoundscapeFitError(GeoaudioError, ValueError):
    """Data that cannot give a soundscape head; the message names the folder and the problem."""


@dataclass
class LabelledPairs:
    """Pairs of a folder with a sound class: dataset indices, keys, class ids and split names."""

    dataset: Any
    indices: np.ndarray
    keys: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    unassigned: int


# ---- which pairs belong to which class --------------------------------------------------------

def label_pairs(bundle, root: str | Path, classes: SoundClasses | None, audio_source: str) -> tuple[LabelledPairs, SoundClasses]:
    """Open ``root`` as pairs and assign each a class (``classes`` None: :func:`default_classes`)."""
    from model.data import SoundingEarthDataset
    from model.data.splits import split_of_key

    dataset = SoundingEarthDataset(root, split="all", audio_source=audio_source,
                                   image_input=bundle.image_input, audio_config=bundle.audio_config,
                                   random_audio_chunk=False, substitute_unreadable=False)
    classes = classes or default_classes(dataset.metadata)
    labels = class_ids(classes.assign(dataset.metadata), classes)
    chosen = np.flatnonzero(labels >= 0)
    keys = np.asarray(dataset.keys, dtype=np.int64)[chosen]
    pairs = LabelledPairs(dataset, chosen, keys, labels[chosen],
                          np.array([split_of_key(k) for k in keys], dtype=object), int((labels < 0).sum()))
    return pairs, classes


def readable_pairs(pairs: LabelledPairs, keys: np.ndarray) -> LabelledPairs:
    """``pairs`` restricted to ``keys`` (the embedded ones, in the pairs' order)."""
    keep = np.isin(pairs.keys, keys)
    return LabelledPairs(pairs.dataset, pairs.indices[keep], pairs.keys[keep], pairs.labels[keep],
                         pairs.splits[keep], pairs.unassigned)


def class_counts(pairs: LabelledPairs, classes: SoundClasses) -> dict[str, dict[str, int]]:
    """Pairs per class and split: ``{name: {"train": n, "val": n, "test": n}}``."""
    return {name: {s: int(((pairs.labels == k) & (pairs.splits == s)).sum()) for s in SPLITS}
            for k, name in enumerate(classes.names)}


def check_counts(root: str | Path, pairs: LabelledPairs, classes: SoundClasses) -> None:
    """SoundscapeFitError when no pair has a class or a class has no training pair (names them)."""
    if len(pairs.keys) == 0:
        raise SoundscapeFitError(f"{root}: no usable recordings: none of the {pairs.unassigned} pairs "
                                 f"matches a sound class of {classes.source}")
    empty = [name for name, c in class_counts(pairs, classes).items() if c["train"] == 0]
    if empty:
        listed = ", ".join(repr(n) for n in empty)
        which = f"sound class {listed} has" if len(empty) == 1 else f"sound classes {listed} have"
        raise SoundscapeFitError(f"{root}: {which} no recordings in the training split "
                                 f"(classes from {classes.source}); remove them from the class file or add data")


# ---- embedding ------------------------------------------------------------------------------------

def embed_pairs(bundle, pairs: LabelledPairs, batch_size: int = 16, workers: int = 0, device: str = "cpu",
                progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and audio embeddings (M, D) float32 of the readable labelled pairs (evaluation
    transform; all chunks of a recording averaged) and their keys (M,), in the pairs' order; an
    unreadable pair is reported by the dataset and left out."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from model.data import collate
    from model.nn.encoders import audio_encoder_from_bundle, image_encoder_from_bundle

    image_encoder = image_encoder_from_bundle(bundle).to(device)
    audio_encoder = audio_encoder_from_bundle(bundle).to(device)
    loader = DataLoader(Subset(pairs.dataset, pairs.indices.tolist()), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate)
    zi, za, keys = [], [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="embedding pairs", unit="batch", disable=not progress):
            if batch is None:
                continue
            zi.append(image_encoder(batch["image"].to(device)).float().cpu().numpy())
            za.append(audio_encoder.embed_recordings(batch["audio"].to(device), batch["counts"],
                                                     batch_size=64).float().cpu().numpy())
            keys.append(batch["key"].numpy())
    if not keys:
        raise SoundscapeFitError(f"{pairs.dataset.root}: none of the {len(pairs.keys)} labelled pairs is readable")
    return np.concatenate(zi), np.concatenate(za), np.concatenate(keys)


# ---- fitting ------------------------------------------------------------------------------------

def class_prototypes(audio: np.ndarray, labels: np.ndarray, num_classes: int, distance: str) -> np.ndarray:
    """(K, D) float32 prototypes: class means (euclidean) or normalised means of normalised
    embeddings (cosine). Every class must have at least one row."""
    z = unit_rows(audio) if distance == COSINE else np.asarray(audio, dtype=np.float64)
    protos = np.stack([z[labels == k].mean(axis=0) for k in range(num_classes)])
    if distance == COSINE:
        protos = unit_rows(protos)
    return protos.astype(np.float32)


def mean_nll(d: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """mean_n [log sum_k exp(-d_nk / T) + d_ny / T] in nats (d: (N, K) distances)."""
    logits = -np.asarray(d, dtype=np.float64) / temperature
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(labels)), labels]))


def fit_temperature(d: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising :func:`mean_nll` (golden-section search over log(1 / T))."""
    scale = float(np.std(d)) or 1.0
    lo, hi = math.log(BETA_RANGE[0] / scale), math.log(BETA_RANGE[1] / scale)

    def cost(u: float) -> float:
        return mean_nll(d, labels, math.exp(-u))

    a, b = lo, hi
    c, e = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fe = cost(c), cost(e)
    for _ in range(SEARCH_STEPS):
        if fc <= fe:
            b, e, fe = e, c, fc
            c = b - GOLDEN * (b - a)
            fc = cost(c)
        else:
            a, c, fc = c, e, fe
            e = a + GOLDEN * (b - a)
            fe = cost(e)
    return math.exp(-(a + b) / 2.0)


def _accuracy(d: np.ndarray, labels: np.ndarray) -> float | None:
    return float((d.argmin(axis=1) == labels).mean()) if len(labels) else None


def fit_head(image: np.ndarray, audio: np.ndarray, pairs: LabelledPairs, classes: SoundClasses,
             distance: str) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Prototypes (K, D), temperature T and the fit report (module doc) from embedded pairs."""
    k = len(classes.classes)
    train = pairs.splits == "train"
    protos = class_prototypes(audio[train], pairs.labels[train], k, distance)
    d = pairwise_distance(image, protos, distance)
    fit_on = "val" if (pairs.splits == "val").any() else "train"
    on = pairs.splits == fit_on
    temperature = fit_temperature(d[on], pairs.labels[on])
    frequency = np.bincount(pairs.labels[train], minlength=k) / train.sum()
    majority = int(frequency.argmax())
    report: dict[str, Any] = {
        "classes_from": classes.source, "rule": classes.rule,
        "recordings": int(len(pairs.keys)), "unassigned": pairs.unassigned,
        "counts": class_counts(pairs, classes),
        "temperature_fitted_on": fit_on,
        "nll": {fit_on: mean_nll(d[on], pairs.labels[on], temperature),
                "class_frequency": float(-np.log(frequency[pairs.labels[on]]).mean())},
        "accuracy": {}, "baseline": {"class": classes.names[majority]},
    }
    for split in ("val", "test"):
        rows = pairs.splits == split
        report["accuracy"][split] = _accuracy(d[rows], pairs.labels[rows])
        report["baseline"][split] = float((pairs.labels[rows] == majority).mean()) if rows.any() else None
    return protos, temperature, report


# ---- the bundle -----------------------------------------------------------------------------------

def write_head(bundle, classes: SoundClasses, prototypes: np.ndarray, temperature: float,
               report: dict[str, Any], calibration: dict[str, Any] | None = None):
    """Store the head in ``bundle`` (replacing an earlier soundscape head), with the query distances'
    calibration when given (:mod:`model.heads.query_calibration`); returns it reloaded."""
    from model.bundle import save
    from model.nn.soundscape_head import HEAD, soundscape_meta, soundscape_tensors

    meta = copy.deepcopy(bundle.meta)
    meta.setdefault("heads", {})[HEAD] = soundscape_meta(classes.to_meta(), temperature, report)
    if calibration is not None:
        meta["heads"][HEAD]["query_calibration"] = calibration
    tensors = {k: v for k, v in bundle.tensors.items() if not k.startswith(f"{HEAD}.")}
    tensors.update(soundscape_tensors(prototypes))
    return save(bundle.path, meta, tensors, overwrite=True)


def fit_soundscape(bundle, root: str | Path, classes: SoundClasses | None = None, audio_source: str = "spectrogram",
                   batch_size: int = 16, workers: int = 0, device: str = "cpu", progress: bool = True):
    """Fit the head on ``root`` and write it into ``bundle``; returns (reloaded bundle, report)."""
    if not bundle.has("audio_encoder"):
        raise SoundscapeFitError(f"{bundle.path}: bundle has no audio encoder to make prototypes with")
    pairs, classes = label_pairs(bundle, root, classes, audio_source)
    check_counts(root, pairs, classes)
    image, audio, keys = embed_pairs(bundle, pairs, batch_size, workers, device, progress)
    if len(keys) < len(pairs.keys):  # unreadable pairs were left out: keep the labels of the rest
        pairs = readable_pairs(pairs, keys)
        check_counts(root, pairs, classes)
    protos, temperature, report = fit_head(image, audio, pairs, classes, bundle.distance)
    report.update({"data": str(root), "audio_source": audio_source})
    fit_on = report["temperature_fitted_on"]
    on = pairs.splits == fit_on
    calibration = fit_query_calibration(image[on], audio[on], bundle.distance, fit_on)
    report["query_calibration_auc"] = None if calibration is None else calibration["auc"]
    return write_head(bundle, classes, protos, temperature, report, calibration), report


# ---- command line ---------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f}%"


def format_counts(report: dict[str, Any]) -> list[str]:
    """The per-class table of a report, one line per class."""
    width = max(12, *(len(n) for n in report["counts"]))
    lines = [f"  {'class':<{width}} {'train':>6} {'val':>6} {'test':>6}"]
    for name, c in report["counts"].items():
        lines.append(f"  {name:<{width}} {c['train']:>6} {c['val']:>6} {c['test']:>6}")
    return lines


def format_report(report: dict[str, Any], temperature: float) -> str:
    """The fit report as printed by the CLI."""
    lines = [f"soundscape head: {len(report['counts'])} classes from {report['classes_from']}",
             f"  {report['recordings']} recordings with a class, {report['unassigned']} matched no class "
             "(left out)", *format_counts(report)]
    fit_on = report["temperature_fitted_on"]
    lines.append(f"temperature T = {temperature:.4g} (fitted on the {fit_on} pairs: NLL "
                 f"{report['nll'][fit_on]:.3f} nats vs {report['nll']['class_frequency']:.3f} "
                 "for the training class frequencies)")
    acc, base = report["accuracy"], report["baseline"]
    lines.append(f"image -> class accuracy:    val {_pct(acc['val'])}   test {_pct(acc['test'])}")
    lines.append(f"baseline (always {base['class']!r}): val {_pct(base['val'])}   test {_pct(base['test'])}")
    return "\n".join(lines)
