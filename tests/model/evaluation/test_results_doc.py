"""docs/results.md from hand-written small result files: the table cells, and the budget checks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.evaluation.recipe import QUICK, build_recipe
from model.evaluation.recipe_run import RecipeError, check_equal_steps, write_recipe_record
from model.evaluation.report import write_run_metrics
from model.evaluation.results_doc import render


def write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def training(steps: int, seed: int = 0) -> dict:
    return {"epochs": 2, "epochs_run": 2, "steps": steps, "seed": seed, "threads": 2, "truncated": False}


def direction(r1: float, r10: float, rank: float) -> dict:
    return {"n": 20, "recall@1": r1, "recall@10": r10, "recall@100": 1.0, "median_rank": rank, "km@10": 0.25}


@pytest.fixture
def results(tmp_path):
    """A results folder as model.results run writes it, with two seeds and made-up scores."""
    root = tmp_path / "results"
    write_recipe_record(root, build_recipe(tmp_path / "work", quick=True), QUICK)
    for loss, r10 in (("batch_all_triplet", 0.6), ("contrastive", 0.55), ("naive_triplet", 0.5)):
        write(root / "losses" / loss / "metrics.json",
              {"image_to_audio": direction(0.1, r10, 7), "audio_to_image": direction(0.05, 0.45, 11.5)})
        write(root / "losses" / loss / "training.json", training(4))
    for name in ("audiovisual-s1", "simclr-s0", "simclr-s1", "moco-s0", "moco-s1"):
        write(root / "inits" / f"pretrain-{name}" / "training.json", training(4))
    accuracy = {"audiovisual": (0.9, 1.0), "simclr": (0.7, 0.8), "moco": (0.6, 0.6), "random": (0.5, 0.7)}
    for init, values in accuracy.items():
        for seed, value in enumerate(values):
            write_run_metrics(root / "inits" / f"classify-{init}-s{seed}",
                              {"task": "classify", "dataset": "synthetic-scenes", "init": init, "seed": seed,
                               "scores": {"accuracy": value}})
            write_run_metrics(root / "inits" / f"segment-{init}-s{seed}",
                              {"task": "segment", "dataset": "synthetic-deepglobe", "init": init, "seed": seed,
                               "scores": {"overall_accuracy": 0.8 + 0.1 * seed, "miou": 0.5}})
    report = {"counts": {"traffic": {}, "birds": {}}, "recordings": 60, "temperature_fitted_on": "val",
              "accuracy": {"val": 0.75, "test": 0.8}, "baseline": {"class": "traffic", "val": 0.25, "test": 0.3}}
    write(root / "heads" / "batch_all_triplet" / "bundle.json", {"heads": {"soundscape": {"report": report}}})
    write(root / "heads" / "batch_all_triplet" / "gallery.json",
          {"n": 12, "k": 5, "top1": 0.5, "topk": 0.4, "majority_class": "urban", "majority_share": 0.25,
           "split": "test", "gallery_size": 60})
    return root


def table_row(text: str, first_cell: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))


def test_downstream_cells_are_mean_and_sample_std_over_seeds(results):
    text = render(results)
    # 0.9 and 1.0: mean 95.0 %, sample std sqrt(0.005) = 7.1 %; OA 0.8 and 0.9 the same
    assert table_row(text, "audiovisual (batch-all)") == "| audiovisual (batch-all) | 2 | 95.0 ± 7.1 | 85.0 ± 7.1 | 50.0 ± 0.0 |"
    assert table_row(text, "MoCo v2 (image only)") == "| MoCo v2 (image only) | 2 | 60.0 ± 0.0 | 85.0 ± 7.1 | 50.0 ± 0.0 |"
    assert table_row(text, "random").startswith("| random | 2 | 60.0 ± 14.1 |")
    assert "All 8 pretraining runs made **4 optimiser steps**" in text


def test_loss_table_has_steps_per_row_and_chance(results):
    text = render(results)
    assert table_row(text, "contrastive (InfoNCE)") == (
        "| contrastive (InfoNCE) | 2 | 4 | 0.100 | 0.550 | 1.000 | 7 | 0.25 | 0.450 | 11.5 |")
    # 20 test pairs: chance Recall@10 = 10/20, median rank (20 + 1) / 2
    assert table_row(text, "chance (20 test pairs)").startswith("| chance (20 test pairs) | | | 0.050 | 0.500 |")


def test_heads_and_sources_are_named(results):
    text = render(results)
    assert "accuracy **80.0 % on the test tiles** against 30.0 % for always 'traffic'" in text
    assert "**50.0 %** (top-1); 40.0 % of the top 5" in text
    for source in ("losses/<loss>/metrics.json", "inits/classify-*/metrics.json", "gallery.json",
                   "recipe.json"):
        assert source in text
    assert "--quick" in text  # the files say they came from the quick recipe


def test_different_steps_stop_the_report(results):
    write(results / "inits" / "pretrain-moco-s1" / "training.json", training(5, seed=1))
    with pytest.raises(RecipeError, match="different numbers of optimiser steps.*pretrain-moco-s1: 5"):
        render(results)


def test_a_truncated_run_is_not_comparable():
    with pytest.raises(RecipeError, match="b stopped early"):
        check_equal_steps({"a": training(4), "b": {**training(4), "truncated": True}}, "runs")
    assert check_equal_steps({"a": training(4), "b": training(4)}, "runs") == 4


def test_a_results_folder_of_other_sizes_is_refused(results, tmp_path):
    from model.evaluation.recipe import FULL

    with pytest.raises(RecipeError, match="made with other sizes"):
        write_recipe_record(results, build_recipe(tmp_path / "work"), FULL)


def test_a_partial_results_folder_names_what_is_not_run(results):
    import shutil

    assert "## Not run yet" not in render(results)  # every run of the recipe has its files
    shutil.rmtree(results / "inits")
    shutil.rmtree(results / "heads")
    text = render(results)
    assert "| batch-all triplet" in text and "## Downstream" not in text
    note = text.split("## Not run yet", 1)[1]
    assert "sections: heads, inits" in note and "python -m model.results run --out docs/results" in note
