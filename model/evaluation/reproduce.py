"""The paper's tables by one command (``python -m model.reproduce``): which cells, how, and the table.

Each *cell* of the SoundingEarth paper's downstream tables is one geoaudio command with the
reference protocol (:mod:`model.train.reference_protocol`, ``--protocol reference``; ``--metrics
reference`` for retrieval) on a dataset found under the data root by its public folder name
(:data:`DATASETS`; the first existing alias wins). A cell whose dataset is missing is skipped and
listed. Each cell writes ``OUT/<cell>/metrics.json`` (retrieval: ``retrieval.json``); a cell with
its file is not run again, so a killed run resumes.

The table (:func:`table_rows`) puts the paper's figure (:data:`PAPER`, from the published
checkpoints' reference sheet, ``../shared/reference/soundingearth-checkpoints.md``) beside each
measured one, in percent, with the difference ``measured - paper`` in percentage points.

``quick``: one epoch per cell, and the DeepGlobe patches shrunk to fit small tiles — a smoke test
of the whole chain, not a reproduction.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

DATASETS: dict[str, tuple[str, ...]] = {
    "ucmerced": ("UCMerced_LandUse/Images", "UCMerced_LandUse", "ucmerced", "UCMerced"),
    "aid": ("AID", "aid"),
    "resisc45": ("NWPU-RESISC45", "resisc45", "NWPU_RESISC45"),
    "deepglobe": ("DeepGlobe", "deepglobe"),
    "advance": ("ADVANCE", "advance"),
    "soundingearth": ("SoundingEarth", "soundingearth", "aporee"),
}
"""The folder names each dataset is published or unpacked under (``python -m model.fetch`` uses the
lower-case ones)."""

PAPER: dict[tuple[str, str], dict[str, float]] = {
    ("ucmerced", "accuracy"): {"resnet18": 90.19, "resnet50": 89.71},
    ("resisc45", "accuracy"): {"resnet18": 81.71, "resnet50": 84.88},
    ("aid", "accuracy"): {"resnet18": 81.78, "resnet50": 84.44},
    ("deepglobe", "overall_accuracy"): {"resnet18": 86.11, "resnet50": 86.58},
    ("deepglobe", "miou"): {"resnet18": 67.07, "resnet50": 67.87},
    ("advance", "f1_concat"): {"resnet18": 89.50, "resnet50": 88.83},
    ("advance", "f1_audio"): {"resnet18": 37.69, "resnet50": 39.01},
    ("advance", "f1_image"): {"resnet18": 86.92, "resnet50": 83.84},
    ("soundingearth", "R@100"): {"resnet18": 25.6},
}
"""The paper's figures in percent by (dataset, metric) and image encoder. Retrieval: the
image-to-audio Recall@100 cited for the published model (ResNet-18); no ResNet-50 figure is given."""

BENCHMARKS = {"ucmerced": "UC Merced (accuracy)", "aid": "AID (accuracy)", "resisc45": "NWPU-RESISC45 (accuracy)",
              "deepglobe": "DeepGlobe land cover", "advance": "ADVANCE (weighted F1)",
              "soundingearth": "SoundingEarth retrieval (image to audio)"}
METRIC_NAMES = {"accuracy": "accuracy", "overall_accuracy": "OA", "miou": "mIoU", "f1_concat": "audio + image",
                "f1_audio": "audio only", "f1_image": "image only", "R@100": "R@100", "R@500": "R@500",
                "R@1000": "R@1000", "median_rank": "median rank"}


@dataclass(frozen=True)
class Cell:
    """One command of the reproduction: ``python -m module *argv`` writing ``result`` (a JSON
    file under the cell's folder), read back by ``read`` into ``{metric: value in percent}``."""

    name: str
    dataset: str
    module: str
    argv: tuple[str, ...]
    result: Path
    read: Callable[[dict[str, Any]], dict[str, float]]


def find_dataset(root: Path, name: str) -> Path | None:
    """The first existing folder among the dataset's aliases under ``root``, or None."""
    for alias in DATASETS[name]:
        path = (root / alias).resolve()
        if path.is_dir():
            return path
    return None


def _classify_scores(m: dict[str, Any]) -> dict[str, float]:
    return {"accuracy": 100.0 * m["accuracy"]}


def _segment_scores(m: dict[str, Any]) -> dict[str, float]:
    return {k: 100.0 * v for k, v in m["scores"].items() if v is not None}


def _advance_scores(m: dict[str, Any]) -> dict[str, float]:
    return {f"f1_{name}": 100.0 * s["mean"] for name, s in m["weighted_f1"].items()}


def _retrieval_scores(m: dict[str, Any]) -> dict[str, float]:
    d = m["image_to_audio"]
    return {**{k: 100.0 * d[k] for k in ("R@100", "R@500", "R@1000")}, "median_rank": d["median_rank"]}


def _deepglobe_patch(root: Path, quick: bool) -> tuple[str, ...]:
    """Quick runs on small tiles: a patch as large as the smallest tile allows (a multiple of 32 px),
    at a stride of half of it; else the reference's 512 px at 347 px."""
    if not quick:
        return ()
    from PIL import Image

    sides = []
    for path in sorted(root.rglob("*_sat.jpg"))[:16]:
        with Image.open(path) as im:
            sides.append(min(im.size))
    side = max(32, min(512, (min(sides, default=512) // 32) * 32))
    return ("--crop-size", str(side), "--patch-stride", str(max(1, side // 2)))


def plan(root: Path, init: str, arch: str, out: Path, quick: bool = False,
         seed: int = 0) -> tuple[list[Cell], list[str]]:
    """(the cells the data under ``root`` allows, the datasets skipped because they are missing)."""
    epochs = ("--epochs", "1" if quick else "5")
    common = ("--init", init, "--arch", arch, "--seed", str(seed), "--protocol", "reference", *epochs)
    cells, missing = [], []
    for name in DATASETS:
        data = find_dataset(root, name)
        if data is None:
            missing.append(name)
            continue
        folder = out / name
        if name in ("ucmerced", "aid", "resisc45"):
            cells.append(Cell(name, name, "model.finetune", ("classify", "--data", str(data), *common, "--name", name,
                                                              "--out", str(folder)), folder / "metrics.json",
                              _classify_scores))
        elif name == "deepglobe":
            cells.append(Cell(name, name, "model.finetune", ("segment", "--data", str(data), *common, "--name", name,
                                                              *_deepglobe_patch(data, quick), "--out", str(folder)),
                              folder / "metrics.json", _segment_scores))
        elif name == "advance":
            cells.append(Cell(name, name, "model.evaluate", ("advance", "--data", str(data), "--bundle", init,
                                                              "--protocol", "reference", "--name", name,
                                                              "--out", str(folder)), folder / "metrics.json",
                              _advance_scores))
        else:
            cells.append(Cell(name, name, "model.evaluate", ("retrieval", "--bundle", init, "--data", str(data),
                                                              "--split", "test", "--metrics", "reference",
                                                              "--out", str(folder / "retrieval.json")),
                              folder / "retrieval.json", _retrieval_scores))
    return cells, missing


def run_cells(cells: Sequence[Cell], execute: Callable[[str, list[str]], None]) -> dict[str, str]:
    """Run the cells without a result yet (printing each command line). A cell that stops with a
    one-line error (a dataset too small for its protocol, a bad file) is reported and the others
    go on; returns ``{cell: its error}``."""
    from model.core.errors import GeoaudioError, one_line

    failed = {}
    for cell in cells:
        if cell.result.is_file():
            print(f"[{cell.name}] done before: {cell.result}")
            continue
        print(f"[{cell.name}] python -m {cell.module} {' '.join(cell.argv)}", flush=True)
        try:
            execute(cell.module, list(cell.argv))
        except GeoaudioError as e:
            failed[cell.name] = one_line(e)
            print(f"[{cell.name}] failed: {failed[cell.name]}")
    return failed


def table_rows(cells: Sequence[Cell], arch: str) -> list[dict[str, Any]]:
    """One row per (cell, metric): benchmark, metric, paper, measured, difference (percent,
    percentage points; None where the paper gives no figure)."""
    rows = []
    for cell in cells:
        if not cell.result.is_file():
            continue  # failed (listed under the table)
        measured = cell.read(json.loads(cell.result.read_text()))
        for metric, value in measured.items():
            if (cell.dataset, metric) not in PAPER and cell.dataset != "soundingearth":
                continue  # a score the paper's tables do not have
            paper = PAPER.get((cell.dataset, metric), {}).get(arch)
            rows.append({"benchmark": BENCHMARKS[cell.dataset], "metric": METRIC_NAMES.get(metric, metric),
                         "paper": paper, "measured": round(float(value), 2),
                         "difference": None if paper is None else round(float(value) - paper, 2)})
    return rows


def _cell_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def to_markdown(rows: Sequence[dict[str, Any]], arch: str, missing: Sequence[str], quick: bool,
                failed: dict[str, str] | None = None) -> str:
    """The table in the paper's layout (benchmark, metric) with the paper's figure beside ours."""
    lines = [f"# SoundingEarth paper tables, reproduced ({arch})", ""]
    if quick:
        lines += ["**Quick run: one epoch per cell, smaller DeepGlobe patches. A smoke test, not a "
                  "reproduction.**", ""]
    lines += ["| benchmark | metric | paper | measured | difference |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        diff = "—" if r["difference"] is None else f"{r['difference']:+.2f}"
        lines.append(f"| {r['benchmark']} | {r['metric']} | {_cell_text(r['paper'])} | {_cell_text(r['measured'])} | "
                     f"{diff} |")
    lines += ["", "Figures in percent (median rank in ranks); difference = measured - paper, in percentage points."]
    if missing:
        lines += ["", f"Skipped, no data under the root: {', '.join(missing)} "
                      f"(folder names: {'; '.join(f'{n}: {DATASETS[n][0]}' for n in missing)})."]
    for name, error in (failed or {}).items():
        lines += ["", f"Failed, not in the table: {name}: {error}"]
    return "\n".join(lines) + "\n"
