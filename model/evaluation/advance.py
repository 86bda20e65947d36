"""ADVANCE linear probe: ``python -m model.evaluate advance --data DIR --bundle B --out RUN``.

ADVANCE (Hu et al. 2020) pairs aerial images with recordings made at the same places, labelled
with 13 scene classes; the layout is ``DIR/vision/<class>/<id>.jpg`` + ``DIR/sound/<class>/<id>.wav``.
The bundle's encoders stay frozen:

- image embedding: the centred square (``--crop`` of the side) resized to the bundle's tile size,
  ImageNet-normalised, through the image encoder;
- audio embedding: the recording's log-mel spectrogram (the bundle's audio front-end) cut into
  whole chunks, each embedded, averaged over the recording;
- concatenation of both.

Each feature set is standardised (z-scores fitted on the training part) and classified by
multinomial logistic regression (scikit-learn, saga solver, L2, C = ``--C``). The split is one
stratified 80/20 split fixed by ``--split-seed``; each of ``--seeds`` refits the classifier with
that random state (the solver's sample order, so the spread over seeds is small); with
``--vary-split`` each seed also draws its own stratified split, and the spread measures the
sensitivity to the split. Score: weighted F1 on the test part,
``F1_w = sum_k (n_k / n) F1_k``, mean and std over the seeds. A bundle without an audio encoder
(e.g. a model.train.baselines run) is scored on images only.

Writes ``RUN/metrics.json`` (see model/evaluation/report.py), with ``"protocol": "ours"``.

``--protocol reference``: the SoundingEarth reference code's probe
------------------------------------------------------------------
What ``downstream/advance.py`` of khdlr/SoundingEarth does, on our folder layout (the options of the
default protocol above, ``--seeds --split-seed --vary-split --test-ratio --crop --C``, are refused):

- samples: the images ``vision/<class>/<id>.jpg`` sorted by path, keyed by ``<id>``; labels are the
  class folder names in sorted order (the reference's ``np.unique``), i.e. our class indices;
- image embedding: the whole image (no crop, no resize), ``x = (p / 255 - mean) / std`` with the
  bundle's ``image_input`` mean and std (ImageNet's for imported SoundingEarth bundles and ours by
  default; the reference hard-codes ImageNet's), then a 2 x 2 mean pool, ``avg_pool2d(x, 2)``
  (ADVANCE's 512 px images enter the encoder at 256 px; an odd side drops its last row or column),
  through the image encoder, then the loss's distance transform ``T``;
- sound embedding: the whole recording's log-mel spectrogram as ONE input of shape
  (1, 1, n_mels, T) frames (not cut into chunks; the encoder pools globally over any T), with levels
  ``s = clip((exp(dB / 10) - LOW) / (HIGH - LOW), 0, 1)``, ``LOW = exp(-1.5)``, ``HIGH = exp(0.5)``
  (a -15 dB to +5 dB window mapped onto [0, 1]), through the audio encoder, then ``T``;
- ``T``: the reference loss's ``distance_transform``: ``z / ||z||_2`` for a cosine bundle
  (contrastive losses), the identity for a euclidean one (triplet-style losses);
- split: scikit-learn ``train_test_split(stratify=labels, test_size=0.2, random_state=42)`` into
  train+validation and test; repeat ``i = 0..4``: ``train_test_split`` of train+validation with
  ``stratify``, ``test_size = 0.1 / 0.8`` and ``random_state = 42 i`` into train and validation;
  the classifier is fitted on train only (validation is unused, as in the reference);
- classifier: multinomial logistic regression, lbfgs, ``max_iter = 500000``, on unscaled features;
  no penalty when the bundle's provenance names a reference ``LossFunction`` containing
  "Contrastive" (the reference's test), else L2 with C = 1; a bundle without a reference config:
  no penalty for a cosine bundle, L2 for a euclidean one. Current scikit-learn spells the
  reference's ``multi_class='multinomial', penalty='none'`` as ``C = inf`` with the default lbfgs
  solver, which is multinomial for three or more classes; with two classes it fits one binary
  logistic regression, equal to the two-class multinomial one at ``C = 2`` (the multinomial L2
  penalty ``|w1|^2 + |w2|^2`` is ``|w1 - w2|^2 / 2`` at its optimum), which is what is used then;
- score: weighted F1 on test, ``F1_w = sum_k (n_k / n) F1_k`` (``precision_recall_fscore_support``,
  ``average='weighted'``), mean and sample std (ddof = 1, as pandas) over the 5 repeats, for the
  feature sets ``image``, ``audio`` (the reference's ``sound``) and ``concat`` (the one the
  reference reports); weighted precision and recall are kept too.

Sound levels: our log-mel front-end (model/bundle/audio.py) computes
``dB = 10 log10(max(S, 1e-10) / ref) + db_offset`` and, in the ``"soundingearth"`` level encoding,
``v = clip(exp(dB / 10), LOW, HIGH)``; since ``u -> (u - LOW) / (HIGH - LOW)`` is increasing,
``s = (v - LOW) / (HIGH - LOW)`` equals the reference's formula exactly. A ``"db"`` bundle holds
``v = clip(dB, db_offset - 80, db_offset)``; ``s`` computed from it is exact while
``db_offset - 80 <= -15`` and no level is cut at the top (``db_ref = "max"`` puts the loudest bin at
``db_offset``, or ``db_offset >= 5``); otherwise a note is printed. What is assumed: the reference read
precomputed dB spectrograms ``sound/<class>/<id>.npy`` whose sample rate, FFT size, hop, mel bands and
dB reference it does not document; we compute them from the ``.wav`` files with the bundle's
``audio`` settings (with the defaults the loudest bin of each recording sits at +5 dB, i.e. s = 1).

Bad items are left out and counted as in the default protocol; a set too small for the stratified
splits (scikit-learn needs two samples of each class, and each part at least as many samples as
there are classes) is one line (DatasetError). ``metrics.json`` has ``"protocol": "reference"``,
``seed`` = the repeats' random states (0, 42, 84, 126, 168), ``test_keys`` and ``settings``.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

import numpy as np
import torch
from tqdm import tqdm

from model.core.cli import fail, run_cli
from model.data.bad_items import LeftOut, map_readable
from model.nn.encoders import audio_encoder_from_bundle, image_encoder_from_bundle

if TYPE_CHECKING:
    from model.bundle.audio import AudioConfig
    from model.bundle.image_input import ImageInput

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
# the default protocol's options and their defaults (refused with --protocol reference when changed)
OURS_DEFAULTS = {"seeds": list(DEFAULT_SEEDS), "split_seed": 0, "vary_split": False, "test_ratio": 0.2,
                 "crop": 1.0, "C": 1.0}
# --protocol reference: khdlr/SoundingEarth downstream/advance.py
REF_TEST_SIZE = 0.2  # fraction of all samples held out for testing
REF_SPLIT_STATE = 42  # random_state of that split
REF_VAL_SIZE = 0.1 / 0.8  # fraction of train+validation held out for validation (10 % of all)
REF_REPEATS = 5  # repeat i draws its validation part with random_state 42 * i
REF_MAX_ITER = 500000  # lbfgs iterations
REF_POOL = 2  # avg_pool2d kernel and stride applied to the normalised image


def _read_part(paths: Sequence[Path], read, left_out: LeftOut | None) -> tuple[list, list[int]]:
    """``read`` of each path and the indices read; with ``left_out``, unreadable paths are left out
    there instead of stopping the run (:mod:`model.data.bad_items`)."""
    if left_out is None:
        return [read(p) for p in paths], list(range(len(paths)))
    return map_readable(paths, read, left_out)


def _scatter(rows: np.ndarray | None, kept: list[int], n: int, dim: int) -> np.ndarray:
    """(n, dim) float32: ``rows`` at the ``kept`` positions, NaN elsewhere."""
    part = np.full((n, dim), np.nan, np.float32)
    if rows is not None:
        part[kept] = rows
    return part


@torch.no_grad()
def embed_images(bundle, paths: Sequence[Path], crop: float = 1.0, batch_size: int = 32,
                 progress: bool = True, left_out: LeftOut | None = None) -> np.ndarray:
    """(N, D) image embeddings: centre ``crop`` of each image, resized to the bundle's tile size.
    With ``left_out``, an unreadable image is named there and its row is NaN."""
    from model.data.transforms import EvalTransform, centre_region, read_image

    encoder = image_encoder_from_bundle(bundle)
    transform = EvalTransform(bundle.image_input)
    out: list[np.ndarray] = []
    for i in tqdm(range(0, len(paths), batch_size), desc="embedding images", unit="batch", disable=not progress):
        part = paths[i:i + batch_size]
        images, kept = _read_part(part, lambda p: transform(centre_region(read_image(p), crop)), left_out)
        rows = encoder(torch.stack(images)).numpy() if images else None
        out.append(_scatter(rows, kept, len(part), bundle.embedding_dim))
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def embed_recordings(bundle, paths: Sequence[Path], recordings_per_pass: int = 16,
                     progress: bool = True, left_out: LeftOut | None = None) -> np.ndarray:
    """(N, D) audio embeddings: mean over each recording's whole log-mel chunks. With ``left_out``,
    an empty, silent or undecodable recording is named there and its row is NaN."""
    from model.bundle.audio import load_logmel, to_chunks

    encoder = audio_encoder_from_bundle(bundle)
    config = bundle.audio_config
    out: list[np.ndarray] = []
    bar = tqdm(total=len(paths), desc="embedding audio", unit="rec", disable=not progress)
    for i in range(0, len(paths), recordings_per_pass):
        part = paths[i:i + recordings_per_pass]
        chunks, kept = _read_part(part, lambda p: to_chunks(load_logmel(p, config), config, source=str(p)), left_out)
        rows = (encoder.embed_recordings(torch.from_numpy(np.concatenate(chunks)), [len(c) for c in chunks],
                                         batch_size=64).numpy() if chunks else None)
        out.append(_scatter(rows, kept, len(part), bundle.embedding_dim))
        bar.update(len(part))
    bar.close()
    return np.concatenate(out).astype(np.float32)


def probe_f1(features: np.ndarray, labels: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray,
             seeds: Sequence[int], C: float = 1.0) -> list[float]:
    """Weighted F1 on ``test_idx`` of a standardised logistic regression fitted on ``train_idx``,
    once per seed (the classifier's random state)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for seed in seeds:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="saga", max_iter=2000, random_state=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(features[train_idx], labels[train_idx])
        pred = clf.predict(features[test_idx])
        scores.append(float(f1_score(labels[test_idx], pred, average="weighted")))
    return scores


def check_probe_size(data: Any, labels: np.ndarray, classes: Sequence[str],
                     splits: dict[int, tuple[np.ndarray, np.ndarray]], left_out: LeftOut) -> None:
    """DatasetError (one line, :func:`too_few_samples`) when a split's training part has fewer than
    two classes or its test part no sample: too few usable samples for the probe (after ``left_out``)."""
    for train_idx, test_idx in splits.values():
        if len(np.unique(labels[train_idx])) < 2 or len(test_idx) == 0:
            too_few_samples(data, labels, classes, left_out, "the probe")(
                "it needs two classes in training and a test sample; a class needs two samples to be in both")


# ---- --protocol reference (module doc) ------------------------------------------------------------


def distance_transform(z: np.ndarray, distance: str) -> np.ndarray:
    """The reference loss's ``distance_transform`` of embeddings (N, D): unit rows
    (``model.core.distance.unit_rows``) for a cosine bundle, ``z`` itself for a euclidean one."""
    from model.core.distance import COSINE, unit_rows

    return unit_rows(z) if distance == COSINE else z


def pooled_image(path: Path, image_input: ImageInput) -> torch.Tensor:
    """(1, 3, floor(H / 2), floor(W / 2)) float32: the whole image, ``(p / 255 - mean) / std``, then
    each 2 x 2 block averaged (``avg_pool2d(x, 2)``)."""
    import torch.nn.functional as F

    from model.data.transforms import normalise, read_image

    return F.avg_pool2d(normalise(read_image(path), image_input)[None], REF_POOL)


def reference_levels(logmel: np.ndarray, config: AudioConfig) -> np.ndarray:
    """(n_mels, T) float32 ``s = clip((exp(dB / 10) - LOW) / (HIGH - LOW), 0, 1)`` from a log-mel
    spectrogram in ``config``'s level encoding (dB recovered as the module doc says)."""
    from dataclasses import replace

    from model.bundle.audio import SE_HIGH, SE_LOW, convert_levels

    v = convert_levels(logmel, config, replace(config, level_encoding="soundingearth"))
    return np.clip((v - np.float32(SE_LOW)) / np.float32(SE_HIGH - SE_LOW), 0.0, 1.0).astype(np.float32)


def levels_exact(config: AudioConfig) -> bool:
    """Whether :func:`reference_levels` of ``config``'s encoding equals the reference's formula on the
    unclipped dB: always for ``"soundingearth"``; for ``"db"`` when its window ``[db_offset - 80,
    db_offset]`` cuts nothing inside -15..5 dB (``db_offset - 80 <= -15``, and ``db_offset >= 5`` or
    ``db_ref = "max"``, which puts the loudest bin at ``db_offset``)."""
    from model.bundle.audio import DB_RANGE

    if config.level_encoding == "soundingearth":
        return True
    return config.db_offset - DB_RANGE <= -15.0 and (config.db_offset >= 5.0 or config.db_ref == "max")


def whole_spectrogram(path: Path, config: AudioConfig) -> np.ndarray:
    """(1, 1, n_mels, T) float32: the recording's whole log-mel spectrogram at reference levels."""
    from model.bundle.audio import load_logmel

    return reference_levels(load_logmel(path, config), config)[None, None]


def _embed_each(encoder: torch.nn.Module, distance: str, inputs: Sequence[torch.Tensor], dim: int) -> np.ndarray:
    """(len(inputs), dim) float32 ``T(encoder(x))`` of each (1, C, H, W) input. Inputs of one shape
    share a forward pass: the encoder is in eval mode, so each row is what the input gives alone."""
    out = np.empty((len(inputs), dim), np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    for rows in by_shape.values():
        out[rows] = distance_transform(encoder(torch.cat([inputs[i] for i in rows])).numpy(), distance)
    return out


@torch.no_grad()
def embed_images_reference(bundle, paths: Sequence[Path], batch_size: int = 32, progress: bool = True,
                           left_out: LeftOut | None = None) -> np.ndarray:
    """(N, D) ``T(f_image(pooled_image(path)))`` (images of one size share a forward pass of up to
    ``batch_size``); with ``left_out``, an unreadable image is named there and its row is NaN."""
    encoder = image_encoder_from_bundle(bundle)
    image_input = bundle.image_input
    out = []
    for i in tqdm(range(0, len(paths), batch_size), desc="embedding images", unit="batch", disable=not progress):
        part = paths[i:i + batch_size]
        images, kept = _read_part(part, lambda q: pooled_image(q, image_input), left_out)
        rows = _embed_each(encoder, bundle.distance, images, bundle.embedding_dim) if images else None
        out.append(_scatter(rows, kept, len(part), bundle.embedding_dim))
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def embed_sounds_reference(bundle, paths: Sequence[Path], recordings_per_pass: int = 16, progress: bool = True,
                           left_out: LeftOut | None = None) -> np.ndarray:
    """(N, D) ``T(f_audio(whole_spectrogram(path)))``, each recording one input (recordings of one
    length share a forward pass); with ``left_out``, an empty, silent or undecodable recording is
    named there and its row is NaN."""
    encoder = audio_encoder_from_bundle(bundle)
    config = bundle.audio_config
    out = []
    for i in tqdm(range(0, len(paths), recordings_per_pass), desc="embedding audio", unit="batch",
                  disable=not progress):
        part = paths[i:i + recordings_per_pass]
        spectrograms, kept = _read_part(part, lambda q: torch.from_numpy(whole_spectrogram(q, config)), left_out)
        rows = _embed_each(encoder, bundle.distance, spectrograms, bundle.embedding_dim) if spectrograms else None
        out.append(_scatter(rows, kept, len(part), bundle.embedding_dim))
    return np.concatenate(out).astype(np.float32)


def reference_penalty(bundle) -> tuple[str, str]:
    """(``"none"`` or ``"l2"``, where it comes from): the reference's ``'Contrastive' in LossFunction``
    test when the bundle's provenance holds the reference run's config (``LossFunction`` defaults to
    TripletLoss there), else by the bundle's distance (cosine: none, euclidean: l2)."""
    from model.core.distance import COSINE

    config = bundle.meta.get("provenance", {}).get("reference_config")
    if isinstance(config, dict):
        loss = str(config.get("LossFunction", "TripletLoss"))
        return ("none" if "Contrastive" in loss else "l2"), f"LossFunction {loss} (bundle provenance)"
    return ("none" if bundle.distance == COSINE else "l2"), f"{bundle.distance} distance"


def reference_classifier(penalty: str, n_classes: int):
    """The reference's ``LogisticRegression(multi_class='multinomial', max_iter=500000, penalty=...)``
    in current scikit-learn: lbfgs, C = inf for no penalty, else C = 1 (C = 2 for two classes, where
    the binary model equals the two-class multinomial one; module doc)."""
    from sklearn.linear_model import LogisticRegression

    C = np.inf if penalty == "none" else (2.0 if n_classes == 2 else 1.0)
    return LogisticRegression(C=C, solver="lbfgs", max_iter=REF_MAX_ITER)


def _stratify_problem(labels: np.ndarray, test_size: float, parts: tuple[str, str, str]) -> str | None:
    """Why scikit-learn's stratified ``train_test_split(test_size=test_size)`` of ``labels`` would
    fail, or None: each class needs 2 samples, and the held-out part (``n_held = ceil(test_size n)``)
    and the kept part (``n - n_held``) at least one sample per class. ``parts``: the names of the
    whole, the kept and the held-out part."""
    import math

    whole, kept, held = parts
    counts = np.bincount(labels)[np.unique(labels)]
    n_held = math.ceil(test_size * len(labels))
    if counts.min() < 2:
        return f"a class has only {counts.min()} sample in the {whole}; a stratified split needs 2"
    for n_part, name in ((n_held, f"{held} part ({100 * test_size:g} % of the {whole})"),
                         (len(labels) - n_held, f"{kept} part of the {whole}")):
        if n_part < len(counts):
            return f"the {name} would hold {n_part} samples, fewer than its {len(counts)} classes"
    return None


def _split(index: np.ndarray, labels: np.ndarray, test_size: float, state: int,
           parts: tuple[str, str, str], fail_with: Callable[[str], NoReturn]) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) indices: scikit-learn's stratified ``train_test_split`` of ``index`` with
    ``random_state=state``; ``fail_with(reason)`` raises when it cannot be split."""
    from sklearn.model_selection import train_test_split

    problem = _stratify_problem(labels[index], test_size, parts)
    if problem:
        fail_with(problem)
    try:
        kept, held = train_test_split(index, stratify=labels[index], test_size=test_size, random_state=state)
    except ValueError as e:  # a condition the check above does not know of
        fail_with(str(e).splitlines()[0])
    return np.asarray(kept), np.asarray(held)


def reference_splits(labels: np.ndarray, fail_with: Callable[[str], NoReturn]
                     ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(test indices, [(train, validation) indices of each repeat]) of the reference protocol;
    ``fail_with(reason)`` raises when the set is too small for a split."""
    if len(np.unique(labels)) < 2:
        fail_with("the classifier needs two classes")
    index = np.arange(len(labels))
    trnval, test = _split(index, labels, REF_TEST_SIZE, REF_SPLIT_STATE, ("whole set", "train+validation", "test"),
                          fail_with)
    repeats = [_split(trnval, labels, REF_VAL_SIZE, REF_SPLIT_STATE * i,
                      ("train+validation part", "train", "validation"), fail_with) for i in range(REF_REPEATS)]
    return test, repeats


def too_few_samples(data: Any, labels: np.ndarray, classes: Sequence[str], left_out: LeftOut,
                    what: str = "the reference protocol's stratified splits") -> Callable[[str], NoReturn]:
    """A ``fail_with(reason)`` (as :func:`reference_splits` takes): DatasetError, one line saying how
    many usable samples of how many classes there are and why they are too few for ``what``."""
    from model.data.errors import DatasetError

    def fail_with(reason: str) -> NoReturn:
        dropped = f" after {len(left_out)} unreadable left out" if left_out else ""
        raise DatasetError(f"{data}: {len(labels)} usable samples in {len(np.unique(labels))} of {len(classes)} "
                           f"classes{dropped} are too few for {what} ({reason})")
    return fail_with


def reference_scores(features: np.ndarray, labels: np.ndarray, test: np.ndarray,
                     repeats: Sequence[tuple[np.ndarray, np.ndarray]], penalty: str) -> dict[str, Any]:
    """Weighted precision, recall and F1 on ``test`` of :func:`reference_classifier` fitted on each
    repeat's train part (``{"precision": [...], "recall": [...], "f1": [...], "unconverged": n}``)."""
    from sklearn.metrics import precision_recall_fscore_support

    out: dict[str, Any] = {"precision": [], "recall": [], "f1": [], "unconverged": 0}
    for trn, _val in repeats:
        clf = reference_classifier(penalty, len(np.unique(labels[trn]))).fit(features[trn], labels[trn])
        precision, recall, f1, _ = precision_recall_fscore_support(labels[test], clf.predict(features[test]),
                                                                   average="weighted")
        out["precision"].append(float(precision))
        out["recall"].append(float(recall))
        out["f1"].append(float(f1))
        out["unconverged"] += int(np.max(clf.n_iter_) >= REF_MAX_ITER)
    return out


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std"}``, std with ddof = 1 (0 for one value)."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def _reference_features(bundle, samples, left_out: LeftOut,
                        batch_size: int = 32) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The feature sets (image, audio, concat; image only without an audio encoder) and the mask of
    usable samples (every embedding finite)."""
    features = {"image": embed_images_reference(bundle, [s.image for s in samples], batch_size, left_out=left_out)}
    if bundle.has("audio_encoder"):
        features["audio"] = embed_sounds_reference(bundle, [s.audio for s in samples], left_out=left_out)
    return usable_features(features)


def usable_features(features: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(the feature sets restricted to the samples whose every embedding is finite, plus ``concat``
    of image and audio when both exist; that mask): unreadable items have NaN rows."""
    usable = np.all([np.isfinite(x).all(axis=1) for x in features.values()], axis=0)
    features = {name: x[usable] for name, x in features.items()}
    if "audio" in features:
        features["concat"] = np.concatenate([features["image"], features["audio"]], axis=1)
    return features, usable


def _reference_settings(bundle, penalty: str, penalty_from: str) -> dict[str, Any]:
    """The reference protocol's settings as recorded in metrics.json."""
    from model.core.distance import COSINE

    audio = bundle.has("audio_encoder")
    return {"image": {"crop": None, "pool": REF_POOL, "mean": list(bundle.image_input.mean),
                      "std": list(bundle.image_input.std)},
            "sound": {"input": "whole spectrogram", "levels": "clip((exp(dB/10) - LOW) / (HIGH - LOW), 0, 1), "
                                                              "LOW = exp(-1.5), HIGH = exp(0.5)",
                      "levels_exact": levels_exact(bundle.audio_config) if audio else None},
            "distance_transform": "l2_normalise" if bundle.distance == COSINE else "identity",
            "split": {"test_size": REF_TEST_SIZE, "random_state": REF_SPLIT_STATE, "val_size": REF_VAL_SIZE,
                      "val_random_states": [REF_SPLIT_STATE * i for i in range(REF_REPEATS)]},
            "classifier": {"model": "multinomial logistic regression", "solver": "lbfgs", "max_iter": REF_MAX_ITER,
                           "penalty": penalty, "penalty_from": penalty_from, "standardised": False}}


def run_reference(args: argparse.Namespace, bundle, path: Path, samples, classes: list[str],
                  left_out: LeftOut) -> dict[str, Any]:
    """The reference protocol (module doc): embed, split, probe each feature set; the record.
    Unreadable samples are left out and named in ``left_out``."""
    from model.nn.init import bundle_label

    started = time.time()
    changed = [f"--{k.replace('_', '-')}" for k, v in OURS_DEFAULTS.items() if getattr(args, k) != v]
    if changed:
        fail(f"{' '.join(changed)}: options of --protocol ours; the reference protocol fixes its split and classifier")
    all_labels = np.asarray([s.label for s in samples], dtype=np.int64)
    reference_splits(all_labels, too_few_samples(args.data, all_labels, classes, left_out))  # before embedding
    if bundle.has("audio_encoder") and not levels_exact(bundle.audio_config):
        print(f"note: the bundle's dB window ({bundle.audio_config.level_encoding}, db_offset "
              f"{bundle.audio_config.db_offset:g}) cuts levels inside the reference's -15..5 dB")
    features, usable = _reference_features(bundle, samples, left_out, args.batch_size)
    labels = all_labels[usable]
    keys = [s.image.stem for s, ok in zip(samples, usable) if ok]
    test, repeats = reference_splits(labels, too_few_samples(args.data, labels, classes, left_out))
    penalty, penalty_from = reference_penalty(bundle)
    results = {name: reference_scores(x, labels, test, repeats, penalty)
               for name, x in tqdm(features.items(), desc="probing", unit="set")}
    settings = _reference_settings(bundle, penalty, penalty_from)
    return {"task": "advance", "protocol": "reference", "dataset": args.name or Path(args.data).resolve().name,
            "init": args.label or bundle_label(path), "seed": settings["split"]["val_random_states"],
            "scores": {f"f1_{name}": r["f1"] for name, r in results.items()},
            "weighted_f1": {name: _mean_std(r["f1"]) for name, r in results.items()},
            "weighted_precision": {name: _mean_std(r["precision"]) for name, r in results.items()},
            "weighted_recall": {name: _mean_std(r["recall"]) for name, r in results.items()},
            "unconverged_fits": sum(r["unconverged"] for r in results.values()),
            "bundle": str(path), "bundle_hash": bundle.content_hash(), "classes": classes,
            "n_train": len(repeats[0][0]), "n_val": len(repeats[0][1]), "n_test": len(test),
            "test_keys": [keys[i] for i in test], "settings": settings, "data": str(Path(args.data).resolve()),
            **left_out.record(), "seconds": round(time.time() - started, 1)}


def _open_bundle(args: argparse.Namespace):
    """(the loaded bundle, its folder) named by ``--bundle``; one-line error when there is none."""
    import model.bundle as bundle_mod
    from model.nn.init import find_bundle

    path = find_bundle(args.bundle)
    if path is None:
        fail(f"{args.bundle}: neither a bundle (bundle.json) nor a run folder with bundle/")
    return bundle_mod.load(path), path


def _run_reference_command(args: argparse.Namespace) -> dict[str, Any]:
    """``--protocol reference``: :func:`run_reference`, metrics.json written, a summary printed."""
    from model.data.folder_datasets import scan_advance
    from model.evaluation.report import write_run_metrics

    bundle, path = _open_bundle(args)
    samples, classes = scan_advance(args.data)
    left_out = LeftOut()
    record = run_reference(args, bundle, path, samples, classes, left_out)
    write_run_metrics(args.out, record)
    if left_out:
        print(left_out.summary("samples"))
    for name, s in record["weighted_f1"].items():
        print(f"{name}: weighted F1 {100 * s['mean']:.1f} ± {100 * s['std']:.1f} % over {REF_REPEATS} repeats")
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return record


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Embed the ADVANCE folder, probe each feature set, write ``--out``/metrics.json; return the record."""
    from model.data.folder_datasets import scan_advance, stratified_split
    from model.nn.init import bundle_label
    from model.evaluation.report import write_run_metrics

    started = time.time()
    if args.protocol == "reference":
        return _run_reference_command(args)
    if not 0.0 < args.crop <= 1.0:
        fail(f"--crop must be in (0, 1], got {args.crop}")
    bundle, path = _open_bundle(args)
    samples, classes = scan_advance(args.data)
    left_out = LeftOut()
    features = {"image": embed_images(bundle, [s.image for s in samples], args.crop, args.batch_size,
                                      left_out=left_out)}
    if bundle.has("audio_encoder"):
        features["audio"] = embed_recordings(bundle, [s.audio for s in samples], left_out=left_out)
    features, usable = usable_features(features)
    labels = np.asarray([s.label for s in samples], dtype=np.int64)[usable]
    seeds = list(args.seeds)
    splits = {seed: stratified_split(labels, args.test_ratio, seed if args.vary_split else args.split_seed)
              for seed in seeds}
    check_probe_size(args.data, labels, classes, splits, left_out)
    per_seed = {name: [probe_f1(x, labels, *splits[seed], [seed], args.C)[0] for seed in seeds]
                for name, x in tqdm(features.items(), desc="probing", unit="set")}
    summary = {name: _mean_std(v) for name, v in per_seed.items()}
    record = {"task": "advance", "protocol": "ours", "dataset": args.name or Path(args.data).resolve().name,
              "init": args.label or bundle_label(path), "seed": seeds,
              "scores": {f"f1_{name}": v for name, v in per_seed.items()}, "weighted_f1": summary,
              "bundle": str(path), "bundle_hash": bundle.content_hash(), "split_seed": None if args.vary_split else args.split_seed,
              "vary_split": args.vary_split, "test_ratio": args.test_ratio, "classes": classes,
              "n_train": len(splits[seeds[0]][0]), "n_test": len(splits[seeds[0]][1]), "crop": args.crop, "C": args.C, "data": str(Path(args.data).resolve()),
              **left_out.record(), "seconds": round(time.time() - started, 1)}
    write_run_metrics(args.out, record)
    if left_out:
        print(left_out.summary("samples"))
    for name, s in summary.items():
        print(f"{name}: weighted F1 {100 * s['mean']:.1f} ± {100 * s['std']:.1f} % over {len(seeds)} seeds")
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return record


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="ADVANCE folder (vision/<class>/*.jpg, sound/<class>/*.wav)")
    p.add_argument("--bundle", required=True, help="bundle folder, or a run folder holding bundle/")
    p.add_argument("--out", required=True, help="run folder for metrics.json")
    p.add_argument("--protocol", choices=["ours", "reference"], default="ours",
                   help="ours (default): the probe above; reference: the SoundingEarth code's "
                        "(downstream/advance.py; module doc)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                   help="classifier random states (default 0 1 2 3 4)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the fixed stratified split (default 0)")
    p.add_argument("--vary-split", action="store_true",
                   help="draw each seed's own stratified split (seeded by it) instead of one fixed split")
    p.add_argument("--test-ratio", type=float, default=0.2, help="fraction of each class held out (default 0.2)")
    p.add_argument("--crop", type=float, default=1.0, help="centre crop as a fraction of the image side (default 1)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation strength (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--name", help="dataset name in metrics.json (default: the data folder's name)")
    p.add_argument("--label", help="initialisation label in metrics.json (default: the run or bundle name)")
    p.set_defaults(func=lambda args: (run(args), 0)[1])


def add_parser(subparsers) -> None:
    """Register ``advance`` on ``python -m model.evaluate``'s sub-command parsers."""
    p = subparsers.add_parser("advance", help="ADVANCE linear probe: weighted F1 of image, audio, both",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(p)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.evaluation.advance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(p)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
