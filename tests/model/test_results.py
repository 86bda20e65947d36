"""``python -m model.results``: the quick recipe end to end, its report, and resuming."""
from __future__ import annotations

import json

import pytest

from model.evaluation.recipe import INITS, QUICK
from model.results import main

pytestmark = pytest.mark.slow  # the whole quick recipe: about 40 tiny runs in one process


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """The quick recipe run once into a temporary results folder, and its report."""
    root = tmp_path_factory.mktemp("results")
    out, work, doc = root / "results", root / "work", root / "results.md"
    assert main(["run", "--out", str(out), "--work", str(work), "--quick"]) == 0
    assert main(["report", "--runs", str(out), "--out", str(doc)]) == 0
    return out, work, doc


def test_report_holds_every_initialisation_with_its_seed_count(recipe):
    _, _, doc = recipe
    text = doc.read_text()
    seeds = len(QUICK.seeds)
    for label in ("audiovisual (batch-all)", "SimCLR (image only)", "MoCo v2 (image only)", "random"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(seeds)
        assert all("±" in c for c in cells[2:]), row  # mean ± std over the seeds in every column
    for loss in ("batch-all triplet", "contrastive", "naive triplet"):
        assert f"| {loss}" in text
    assert "Soundscape head" in text and "Gallery" in text


def test_compared_initialisations_made_the_same_steps(recipe):
    out, _, doc = recipe
    files = sorted(out.glob("losses/*/training.json")) + sorted(out.glob("inits/pretrain-*/training.json"))
    assert len(files) == 3 + 3 * len(QUICK.seeds) - 1  # the audiovisual seed 0 is the batch-all loss run
    steps = {json.loads(f.read_text())["steps"] for f in files}
    assert len(steps) == 1 and steps.pop() > 0
    for init in INITS:
        for seed in QUICK.seeds:
            for task in ("classify", "segment"):
                record = json.loads((out / "inits" / f"{task}-{init}-s{seed}" / "metrics.json").read_text())
                assert (record["init"], record["seed"], record["truncated"]) == (init, seed, False)


def test_only_small_json_files_are_kept(recipe):
    out, work, _ = recipe
    kept = [p for p in out.rglob("*") if p.is_file()]
    assert kept and all(p.suffix == ".json" for p in kept)
    assert (work / "losses" / "batch_all_triplet" / "bundle" / "weights.safetensors").is_file()


def test_a_rerun_skips_finished_runs_and_redoes_a_missing_one(recipe, capsys):
    out, work, _ = recipe
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name != "recipe.json"}
    capsys.readouterr()
    assert main(["run", "--out", str(out), "--work", str(work), "--quick"]) == 0
    assert "0 runs to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before

    missing = out / "inits" / "classify-random-s1"
    for f in missing.iterdir():
        f.unlink()
    assert main(["run", "--out", str(out), "--work", str(work), "--quick", "--only", "inits"]) == 0
    printed = capsys.readouterr().out
    assert "1 runs to do" in printed and "[inits/classify-random-s1]" in printed
    assert json.loads((missing / "metrics.json").read_text())["seed"] == 1
