"""``python -m model.evaluate``: evaluate a bundle.

``retrieval --bundle B --data DIR [--split test] [--out FILE.json]``: image-to-audio and
audio-to-image Recall@1/10/100, median rank and the distance in km from each query's place to
the nearest of its top-10 / top-100 retrieved places (see model/evaluation/retrieval.py), under the
bundle's distance. Writes FILE.json, FILE.csv and a recall-curve FILE.png beside it.

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        keys = [k for k in report["image_to_audio"] if k != "chance_recall@10"]
        w = csv.writer(f)
        w.writerow(["direction", *keys])
        for name in DIRECTIONS:
            w.writerow([name, *(report[name][k] for k in keys)])
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
    fig.savefig(out.with_suffix(".png"), dpi=120)
    plt.close(fig)


def retrieval(args: argparse.Namespace) -> int:
    import model.bundle as bundle_mod
    from model.evaluation.embed import embed_folder

    bundle = bundle_mod.load(args.bundle)
    emb = embed_folder(bundle, args.data, split=args.split, audio_source=args.audio_source,
                       batch_size=args.batch_size)
    metrics, curves = retrieval_report(emb.image, emb.audio, emb.locations, bundle.distance)
    report = {**metrics, "bundle": str(bundle.path), "bundle_hash": bundle.content_hash(),
              "data": str(args.data), "split": args.split, "distance": bundle.distance}
    for name in DIRECTIONS:
        m = metrics[name]
        print(f"{name}: n={m['n']} R@1={m['recall@1']:.3f} R@10={m['recall@10']:.3f} "
              f"R@100={m['recall@100']:.3f} median rank={m['median_rank']:.0f} "
              f"km@10={m.get('km@10', float('nan')):.2f} (chance R@10={m['chance_recall@10']:.3f})")
    if args.out:
        _write_outputs(Path(args.out), report, curves)
        print(f"wrote {args.out} (+ .csv, .png)")
    return 0


def _add_retrieval(sub) -> None:
    p = sub.add_parser("retrieval", help="image <-> audio retrieval on a SoundingEarth-format folder")
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="SoundingEarth-format folder")
    p.add_argument("--split", default="test", help="train, val, test or all (default test)")
    p.add_argument("--audio-source", default="spectrogram", choices=["spectrogram", "audio"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", help="FILE.json (a .csv and a recall-curve .png are written beside it)")
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
