"""python -m model.reproduce --quick end to end on tiny files in the real layouts (no AID, no RESISC45)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from model.core.cli import run_cli
from model.evaluation.reproduce import PAPER, find_dataset
from model.reproduce import main
from tests.bundles import init_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from model.synth.downstream import write_advance, write_classify, write_deepglobe
    from model.synth.pairs import write_pairs

    root = tmp_path_factory.mktemp("data")
    write_classify(root / "UCMerced_LandUse" / "Images", 24, size=64, seed=1, workers=1, progress=False)
    dg = write_deepglobe(root / "DeepGlobe", 5, size=96, seed=2, workers=1, progress=False)
    ids = sorted(p.name.split("_")[0] for p in (dg / "train").glob("*_sat.jpg"))
    (dg / "valid_ids.txt").write_text(f"{ids[0]}\n{ids[2]}\n")
    _three_classes(write_advance(root / "ADVANCE", 36, size=64, seed=4, duration=3.0, workers=1, progress=False))
    write_pairs(root / "SoundingEarth", 40, size=64, seed=3, duration=(3.0, 3.0), workers=1, progress=False)
    return root


def _three_classes(advance: Path) -> None:
    """Regroup the synthetic set's 12 classes of 3 into 3 classes of 12: the reference protocol's
    stratified splits need at least one test sample per class."""
    import shutil

    for part in ("vision", "sound"):
        classes = sorted(p for p in (advance / part).iterdir() if p.is_dir())
        for i, folder in enumerate(classes):
            target = advance / part / f"group{i % 3}"
            target.mkdir(exist_ok=True)
            for f in folder.iterdir():
                shutil.move(str(f), target / f.name)
            folder.rmdir()


def test_quick_reproduction_writes_the_side_by_side_table(root, tmp_path, capsys):
    bundle = init_bundle(tmp_path / "init" / "bundle")
    out = tmp_path / "repro"
    argv = ["--data-root", str(root), "--init", str(bundle), "--out", str(out), "--quick"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "skipped, no data: aid, resisc45" in printed
    rows = list(csv.DictReader((out / "table.csv").open()))
    by = {(r["benchmark"], r["metric"]): r for r in rows}
    ucm = by[("UC Merced (accuracy)", "accuracy")]
    assert float(ucm["paper"]) == PAPER[("ucmerced", "accuracy")]["resnet18"]
    assert float(ucm["difference"]) == pytest.approx(float(ucm["measured"]) - float(ucm["paper"]), abs=0.011)
    assert {m for b, m in by if b == "DeepGlobe land cover"} == {"OA", "mIoU"} or \
        {m for b, m in by if b == "DeepGlobe land cover"} == {"OA"}  # mIoU over all six is NaN on tiny tiles
    assert {m for b, m in by if b == "ADVANCE (weighted F1)"} == {"audio + image", "audio only", "image only"}
    assert ("SoundingEarth retrieval (image to audio)", "R@100") in by
    table = (out / "table.md").read_text()
    assert "Quick run" in table and "| UC Merced (accuracy) | accuracy | 90.19 |" in table
    assert "Skipped, no data under the root: aid, resisc45" in table
    for cell in ("ucmerced", "deepglobe", "advance"):
        assert (out / cell / "metrics.json").is_file()
    assert main(argv) == 0 and "done before" in capsys.readouterr().out  # resumes: nothing is run again


def test_a_root_without_any_dataset_is_one_line(tmp_path, capsys):
    assert find_dataset(tmp_path, "aid") is None
    code = run_cli(lambda: main(["--data-root", str(tmp_path), "--init", "x", "--out", str(tmp_path / "o")]))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "none of the paper's datasets" in err
