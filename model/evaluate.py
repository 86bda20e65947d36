"""``python -m model.evaluate``: evaluate a bundle.

``retrieval --bundle B --data DIR [--split test] [--metrics ours|reference] [--out FILE.json]
[--embeddings-out FILE.npz]``: image-to-audio and audio-to-image Recall@1/10/100, median rank and
the distance in km from each query's place to the nearest of its top-10 / top-100 retrieved places
(see model/evaluation/retrieval.py), under the bundle's distance; with ``--metrics reference`` the
paper's R@100/500/1000, D@100/1000 and median rank as its evaluation code computes them
(model/evaluation/reference_retrieval.py). Writes FILE.json, FILE.csv and (ours) a recall-curve
FILE.png beside it; ``--embeddings-out`` the embeddings they came from (``image``, ``audio`` N x D,
``longitude``, ``latitude``, ``key``).

``advance --data DIR --bundle B --out RUN``: the ADVANCE audiovisual scene classification linear
probe (model/evaluation/advance.py): logistic regression on frozen image, audio and concatenated embeddings,
weighted F1 over 5 seeds on a fixed stratified 80/20 split.

``gallery --bundle B --data DIR [--split test] [--k 5] [--audio-source S] [--out FILE.json]``: whether the nearest
gallery recordings of each image (its own left out) have the ``dominant`` class of its own recording
(model/evaluation/gallery_agreement.py: top-1 and top-k agreement next to the majority class).

``report RUNS... --out FILE.md [--title T]``: the paper-style comparison tables of downstream runs
(model/evaluation/report.py): each run's ``metrics.json`` grouped by initialisation (rows) and by
task, dataset and score (columns), ``mean ± std`` in percent over seeds; writes FILE.md and FILE.csv.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any, Callable

from model.core.atomic import write_json_atomic
from model.core.cli import run_cli

DIRECTIONS = ("image_to_audio", "audio_to_image")


def retrieval_report(image, audio, locations, distance: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics by direction, recall curves by direction) for paired embeddings."""
    from model.core.distance import pairwise_distance
    from model.evaluation.retrieval import recall_curve, retrieval_metrics

    d = pairwise_distance(image, audio, distance)
    mats = {"image_to_audio": d, "audio_to_image": d.T}
    metrics = {name: retrieval_metrics(m, locations) for name, m in mats.items()}
    for name in DIRECTIONS:
        metrics[name]["chance_recall@10"] = min(1.0, 10 / max(1, len(d)))
    curves = {name: recall_curve(m) for name, m in mats.items()}
    return metrics, curves


def _write_outputs(out: Path, report: dict[str, Any], curves) -> None:
    """FILE.json, FILE.csv and, when ``curves`` are given, the recall-curve FILE.png."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        keys = [k for k in report["image_to_audio"] if k != "chance_recall@10"]
        w = csv.writer(f)
        w.writerow(["direction", *keys])
        for name in DIRECTIONS:
            w.writerow([name, *(report[name][k] for k in keys)])
    if curves is not None:
        _plot_curves(out.with_suffix(".png"), curves)


def _plot_curves(path: Path, curves) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (k, r) in curves.items():
        ax.plot(k, r, label=name.replace("_", " "))
    k = curves["image_to_audio"][0]
    ax.plot(k, k / k[-1], "k:", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_title(f"retrieval, n = {len(k)}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def retrieval(args: argparse.Namespace) -> int:
    import model.bundle as bundle_mod
    from model.evaluation.embed import embed_folder

    bundle = bundle_mod.load(args.bundle)
    emb = embed_folder(bundle, args.data, split=args.split, audio_source=args.audio_source,
                       batch_size=args.batch_size)
    if args.embeddings_out:
        _write_embeddings(Path(args.embeddings_out), emb)
    if args.metrics == "reference":
        from model.evaluation.reference_retrieval import reference_metrics

        metrics, curves = reference_metrics(emb.image, emb.audio, emb.locations, bundle.distance), None
    else:
        metrics, curves = retrieval_report(emb.image, emb.audio, emb.locations, bundle.distance)
    report = {**metrics, "metrics": args.metrics, "bundle": str(bundle.path), "bundle_hash": bundle.content_hash(),
              "data": str(args.data), "split": args.split, "distance": bundle.distance}
    for name in DIRECTIONS:
        print(f"{name}: " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in metrics[name].items()))
    if args.out:
        _write_outputs(Path(args.out), report, curves)
        print(f"wrote {args.out} (+ .csv{', .png' if curves is not None else ''})")
    return 0


def _write_embeddings(path: Path, emb) -> None:
    """The embeddings behind the metrics as ``.npz`` (``image``, ``audio`` N x D float32,
    ``longitude``, ``latitude`` degrees, ``key``), written atomically."""
    import numpy as np

    from model.core.atomic import write_atomic

    arrays = {"image": emb.image, "audio": emb.audio, "longitude": emb.locations[:, 0],
              "latitude": emb.locations[:, 1], "key": emb.keys}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: np.savez(tmp, **arrays))  # the temporary name keeps .npz, so savez adds none
    print(f"wrote {path}")


def _add_retrieval(sub) -> None:
    p = sub.add_parser("retrieval", help="image <-> audio retrieval on a SoundingEarth-format folder")
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="SoundingEarth-format folder")
    p.add_argument("--split", default="test", help="train, val, test or all (default test)")
    p.add_argument("--audio-source", default="spectrogram", choices=["spectrogram", "audio"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--metrics", default="ours", choices=["ours", "reference"],
                   help="ours: R@1/10/100 (rank <= k), median rank, median km@10/100; reference: the paper's "
                        "R@100/500/1000 (rank < k, ties averaged, columns normalised), D@100/1000 (mean km), "
                        "median rank (default ours)")
    p.add_argument("--out", help="FILE.json (a .csv and, for ours, a recall-curve .png are written beside it)")
    p.add_argument("--embeddings-out", metavar="FILE.npz",
                   help="also write the embeddings the metrics come from (image, audio, longitude, latitude, key)")
    p.set_defaults(func=retrieval)


def _add_advance(sub) -> None:
    from model.evaluation.advance import add_parser

    add_parser(sub)


def gallery(args: argparse.Namespace) -> int:
    """Class agreement of the gallery's nearest recordings; print it, write it to ``--out``."""
    import model.bundle as bundle_mod
    from model.evaluation.gallery_agreement import gallery_agreement

    bundle = bundle_mod.load(args.bundle)
    result = gallery_agreement(bundle, args.data, args.split, args.k, args.audio_source)
    print(f"gallery agreement ({result['n']} {args.split} images, {result['gallery_size']} recordings): "
          f"top-1 {100 * result['top1']:.1f} %, top-{args.k} {100 * result['topk']:.1f} %, always "
          f"{result['majority_class']!r} {100 * result['majority_share']:.1f} %")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, {**result, "bundle": str(bundle.path), "bundle_hash": bundle.content_hash()})
        print(f"wrote {args.out}")
    return 0


def _add_gallery(sub) -> None:
    p = sub.add_parser("gallery", help="dominant-class agreement of each image's nearest gallery recordings")
    p.add_argument("--bundle", required=True, help="bundle with a gallery (python -m model.gallery)")
    p.add_argument("--data", required=True, help="SoundingEarth-format folder with a dominant column")
    p.add_argument("--split", default="test", help="train, val, test or all (default test)")
    p.add_argument("--k", type=int, default=5, help="neighbours per image (default 5)")
    p.add_argument("--audio-source", default="spectrogram", choices=["spectrogram", "audio"],
                   help="read the folder's recordings as spectrogram JPEGs (default) or audio files")
    p.add_argument("--out", help="FILE.json")
    p.set_defaults(func=gallery)


def report(args: argparse.Namespace) -> int:
    """Write the comparison tables of the runs (``.md`` and ``.csv``), print the Markdown."""
    from model.evaluation.report import build_report

    md, csv_path = build_report(args.runs, args.out, args.title)
    print(md.read_text(), end="")
    print(f"wrote {md} and {csv_path}")
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="comparison tables (mean ± std over seeds) of downstream runs")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders, metrics.json files, or folders searched recursively for metrics.json")
    p.add_argument("--out", required=True, help="output Markdown path; the CSV gets the same stem")
    p.add_argument("--title", default="Downstream results", help="heading of the Markdown table")
    p.set_defaults(func=report)


TASKS: list[Callable] = [_add_retrieval, _add_advance, _add_gallery, _add_report]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", required=True)
    for add in TASKS:
        add(sub)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
