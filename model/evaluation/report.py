"""The paper-style comparison tables (``python -m model.evaluate report RUNS... --out FILE.md``).

Every downstream run (``model.finetune classify|segment``, ``model.evaluate advance``) writes a
``RUN/metrics.json`` record holding at least::

    {"task": "classify" | "segment" | "advance", "dataset": "ucm", "init": "random",
     "seed": 0 (or a list of seeds), "scores": {"accuracy": 0.91, ...}}

``scores`` are the headline numbers (fractions in [0, 1]); a score may be a list with one value
per seed (the ADVANCE probe runs several seeds at once). The report groups the records by
initialisation (rows) and by task, dataset and score (columns) and shows ``mean ± std`` in percent,
std being the sample standard deviation over seeds (ddof = 1; a single seed shows no ``±``).
Two records with the same initialisation, task, dataset and seed are an error.

Outputs: ``OUT.md`` (Markdown) and ``OUT.csv`` (same stem; one row per cell with mean, std and the
number of seeds), each written atomically.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from model.core.atomic import write_json_atomic, write_text_atomic
from model.core.errors import GeoaudioError

METRICS_FILE = "metrics.json"
REQUIRED = ("task", "dataset", "init", "seed", "scores")
TASK_ORDER = ("classify", "segment", "advance")
SCORE_NAMES = {
    "accuracy": "accuracy", "overall_accuracy": "OA", "miou": "mIoU",
    "f1_image": "F1 image", "f1_audio": "F1 audio", "f1_concat": "F1 image+audio",
}


class ReportError(GeoaudioError, ValueError):
    """A metrics record that cannot be reported; the message names the file."""


def write_run_metrics(run_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Validate a record (:data:`REQUIRED` keys) and write it as ``run_dir/metrics.json``."""
    path = Path(run_dir) / METRICS_FILE
    check_record(record, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, record, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_record(record: Any, where: str | os.PathLike) -> None:
    """ReportError unless ``record`` has the required keys and numeric scores."""
    if not isinstance(record, Mapping):
        raise ReportError(f"{where}: a metrics record must be a JSON object")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ReportError(f"{where}: metrics record lacks {', '.join(missing)}")
    if not isinstance(record["scores"], Mapping) or not record["scores"]:
        raise ReportError(f"{where}: 'scores' must be a non-empty object")
    seeds = _as_list(record["seed"])
    for name, value in record["scores"].items():
        values = _as_list(value)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ReportError(f"{where}: score {name!r} must be a number or a list of numbers")
        if isinstance(value, list) and len(values) != len(seeds):
            raise ReportError(f"{where}: score {name!r} has {len(values)} values for {len(seeds)} seeds")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def read_run_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A validated metrics record from ``metrics.json`` (or a run folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such metrics file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: invalid JSON ({e})") from None
    check_record(record, path)
    return record


def find_metrics(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """metrics.json files named by ``paths``: a file, a run folder, or any folder searched recursively."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / METRICS_FILE).is_file():
            found.append(p / METRICS_FILE)
        elif p.is_dir():
            hits = sorted(p.rglob(METRICS_FILE))
            if not hits:
                raise ReportError(f"{p}: no {METRICS_FILE} below this folder")
            found += hits
        else:
            raise ReportError(f"{p}: no such run folder or metrics file")
    return list(dict.fromkeys(found))


def column_name(task: str, dataset: str, score: str) -> str:
    """Table column of one score, e.g. ``deepglobe mIoU``."""
    return f"{dataset} {SCORE_NAMES.get(score, score)}"


def collect(records: Iterable[tuple[Path, Mapping[str, Any]]]) -> dict[tuple[str, tuple], list[float]]:
    """Values by (init, (task, dataset, score)), one per seed; ReportError on a repeated seed."""
    cells: dict[tuple[str, tuple], list[float]] = defaultdict(list)
    seen: dict[tuple, Path] = {}
    for path, r in records:
        seeds = _as_list(r["seed"])
        for seed in seeds:
            key = (r["init"], r["task"], r["dataset"], seed)
            if key in seen:
                raise ReportError(f"{path}: init {r['init']!r}, {r['task']} on {r['dataset']}, seed {seed} "
                                  f"is also in {seen[key]}")
            seen[key] = path
        for score, value in r["scores"].items():
            values = _as_list(value)
            cells[(r["init"], (r["task"], r["dataset"], score))] += [float(v) for v in values]
    return cells


def summarise(cells: Mapping[tuple[str, tuple], list[float]]) -> list[dict[str, Any]]:
    """One row per cell: init, task, dataset, score, column, mean, std (ddof 1; 0 for one seed), n."""
    rows = []
    for (init, (task, dataset, score)), values in cells.items():
        v = np.asarray(values, dtype=np.float64)
        rows.append({"init": init, "task": task, "dataset": dataset, "score": score,
                     "column": column_name(task, dataset, score), "mean": float(v.mean()),
                     "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)})
    return rows


def _column_order(rows: list[dict[str, Any]]) -> list[str]:
    def rank(row):
        task = TASK_ORDER.index(row["task"]) if row["task"] in TASK_ORDER else len(TASK_ORDER)
        return task, row["dataset"]

    ordered = sorted(range(len(rows)), key=lambda i: (rank(rows[i]), i))
    return list(dict.fromkeys(rows[i]["column"] for i in ordered))


def format_cell(mean: float, std: float, n: int) -> str:
    """``mean ± std`` in percent with one decimal; just the mean for a single seed."""
    return f"{100 * mean:.1f}" if n < 2 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def to_markdown(rows: list[dict[str, Any]], title: str) -> str:
    """A Markdown table: rows are initialisations (first-seen order), columns task/dataset/score."""
    columns = _column_order(rows)
    inits = list(dict.fromkeys(r["init"] for r in rows))
    cell = {(r["init"], r["column"]): r for r in rows}
    seeds = sorted({r["n"] for r in rows})
    lines = [f"# {title}", "",
             "Scores in percent, mean ± sample standard deviation over seeds "
             f"({'/'.join(map(str, seeds))} seeds per cell); '–' = not run.", "",
             "| init | " + " | ".join(columns) + " |",
             "| --- | " + " | ".join("---:" for _ in columns) + " |"]
    for init in inits:
        values = [format_cell(c["mean"], c["std"], c["n"]) if (c := cell.get((init, col))) else "–"
                  for col in columns]
        lines.append(f"| {init} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One line per cell: init, task, dataset, score, mean, std, n (fractions, not percent)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["init", "task", "dataset", "score", "mean", "std", "n"])
    for r in rows:
        writer.writerow([r["init"], r["task"], r["dataset"], r["score"], f"{r['mean']:.6f}", f"{r['std']:.6f}", r["n"]])
    return buf.getvalue()


def build_report(runs: Iterable[str | os.PathLike], out: str | os.PathLike, title: str) -> tuple[Path, Path]:
    """Read the runs' metrics, write ``out`` (.md) and the .csv beside it; return both paths."""
    files = find_metrics(runs)
    if not files:
        raise ReportError("no metrics.json files given")
    rows = summarise(collect((f, read_run_metrics(f)) for f in files))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = write_text_atomic(out.with_suffix(".md"), to_markdown(rows, title))
    csv_path = write_text_atomic(out.with_suffix(".csv"), to_csv(rows))
    return md, csv_path
