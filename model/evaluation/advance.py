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

Writes ``RUN/metrics.json`` (see model/evaluation/report.py).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from model.core.cli import fail, run_cli
from model.data.bad_items import LeftOut, map_readable
from model.nn.encoders import audio_encoder_from_bundle, image_encoder_from_bundle

DEFAULT_SEEDS = (0, 1, 2, 3, 4)


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
    """DatasetError (one line) when a split's training part has fewer than two classes or its test
    part no sample: too few usable samples for the probe (after ``left_out``)."""
    from model.data.errors import DatasetError

    for train_idx, test_idx in splits.values():
        if len(np.unique(labels[train_idx])) < 2 or len(test_idx) == 0:
            present = len(np.unique(labels))
            dropped = f" after {len(left_out)} unreadable left out" if left_out else ""
            raise DatasetError(f"{data}: {len(labels)} usable samples in {present} of {len(classes)} classes{dropped} "
                               "are too few for the probe (it needs two classes in training and a test sample; "
                               "a class needs two samples to be in both)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Embed the ADVANCE folder, probe each feature set, write ``--out``/metrics.json; return the record."""
    import model.bundle as bundle_mod
    from model.data.folder_datasets import scan_advance, stratified_split
    from model.nn.init import bundle_label, find_bundle
    from model.evaluation.report import write_run_metrics

    started = time.time()
    if not 0.0 < args.crop <= 1.0:
        fail(f"--crop must be in (0, 1], got {args.crop}")
    path = find_bundle(args.bundle)
    if path is None:
        fail(f"{args.bundle}: neither a bundle (bundle.json) nor a run folder with bundle/")
    bundle = bundle_mod.load(path)
    samples, classes = scan_advance(args.data)
    left_out = LeftOut()
    features = {"image": embed_images(bundle, [s.image for s in samples], args.crop, args.batch_size,
                                      left_out=left_out)}
    if bundle.has("audio_encoder"):
        features["audio"] = embed_recordings(bundle, [s.audio for s in samples], left_out=left_out)
    usable = np.all([np.isfinite(x).all(axis=1) for x in features.values()], axis=0)
    features = {name: x[usable] for name, x in features.items()}
    if "audio" in features:
        features["concat"] = np.concatenate([features["image"], features["audio"]], axis=1)
    labels = np.asarray([s.label for s in samples], dtype=np.int64)[usable]
    seeds = list(args.seeds)
    splits = {seed: stratified_split(labels, args.test_ratio, seed if args.vary_split else args.split_seed)
              for seed in seeds}
    check_probe_size(args.data, labels, classes, splits, left_out)
    per_seed = {name: [probe_f1(x, labels, *splits[seed], [seed], args.C)[0] for seed in seeds]
                for name, x in tqdm(features.items(), desc="probing", unit="set")}
    summary = {name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
               for name, v in per_seed.items()}
    record = {"task": "advance", "dataset": args.name or Path(args.data).resolve().name,
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
