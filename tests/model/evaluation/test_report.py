"""The downstream comparison report: metrics records in, Markdown and CSV tables out."""
from __future__ import annotations

import csv
import json

import pytest

from model.core.cli import run_cli
from model.evaluate import main as evaluate
from model.evaluation.report import ReportError, build_report, read_run_metrics, write_run_metrics


def record(task, dataset, init, seed, **scores):
    return {"task": task, "dataset": dataset, "init": init, "seed": seed, "scores": scores}


@pytest.fixture
def runs(tmp_path):
    records = [
        record("classify", "ucm", "random", 0, accuracy=0.50),
        record("classify", "ucm", "random", 1, accuracy=0.60),
        record("classify", "ucm", "soundingearth", 0, accuracy=0.80),
        record("classify", "ucm", "soundingearth", 1, accuracy=0.90),
        record("segment", "deepglobe", "soundingearth", 0, overall_accuracy=0.861, miou=0.6707),
        record("advance", "advance", "soundingearth", [0, 1, 2], f1_image=[0.8, 0.9, 1.0], f1_audio=[0.3, 0.4, 0.5]),
    ]
    for i, r in enumerate(records):
        write_run_metrics(tmp_path / "runs" / f"run{i}", r)
    return tmp_path / "runs"


def test_table_holds_mean_and_sample_std_per_init_and_benchmark(runs, tmp_path):
    md, csv_path = build_report([runs], tmp_path / "docs" / "results_downstream.md", "Downstream")
    lines = md.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| init"))
    assert header == ("| init | ucm accuracy | deepglobe OA | deepglobe mIoU | advance F1 image | advance F1 audio |")
    rows = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ") and "---" not in line}
    # accuracies 0.5 and 0.6: mean 55.0 %, sample std sqrt(0.005) = 7.1 %
    assert rows["random"] == "| random | 55.0 ± 7.1 | – | – | – | – |"
    assert rows["soundingearth"] == "| soundingearth | 85.0 ± 7.1 | 86.1 | 67.1 | 90.0 ± 10.0 | 40.0 ± 10.0 |"
    with open(csv_path, newline="") as f:
        cells = list(csv.DictReader(f))
    assert csv_path.name == "results_downstream.csv"
    f1 = next(c for c in cells if c["init"] == "soundingearth" and c["score"] == "f1_image")
    assert (float(f1["mean"]), float(f1["std"]), int(f1["n"])) == (pytest.approx(0.9), pytest.approx(0.1), 3)


def test_records_are_validated(tmp_path):
    with pytest.raises(ReportError, match="lacks seed"):
        write_run_metrics(tmp_path / "a", {"task": "classify", "dataset": "d", "init": "i", "scores": {"x": 1.0}})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text(json.dumps(record("advance", "a", "i", [0, 1], f1_image=[0.5])))
    with pytest.raises(ReportError, match="1 values for 2 seeds"):
        read_run_metrics(tmp_path / "b")
    assert not list(tmp_path.rglob(".metrics.json*")), "a temporary file was left behind"


def test_the_same_seed_twice_is_an_error(runs, tmp_path, capsys):
    write_run_metrics(tmp_path / "again", record("classify", "ucm", "random", 1, accuracy=0.7))
    code = run_cli(lambda: evaluate(["report", str(runs), str(tmp_path / "again"), "--out", str(tmp_path / "r.md")]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "seed 1" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.md").exists()


def test_cli_accepts_run_folders_and_files(runs, tmp_path, capsys):
    assert evaluate(["report", str(runs / "run0"), str(runs / "run1" / "metrics.json"), "--out", str(tmp_path / "t.md"),
                     "--title", "UCM only"]) == 0
    text = (tmp_path / "t.md").read_text()
    assert text.startswith("# UCM only") and "| random | 55.0 ± 7.1 |" in text
    assert (tmp_path / "t.csv").is_file()
