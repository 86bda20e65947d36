"""Running the results recipe (:mod:`model.evaluation.recipe`) with resume, and checking its budgets.

A run is *finished* when every file it keeps is in ``OUT/<section>/<name>/`` (a data run, which
keeps nothing, when its work marker ``WORK/<section>/<name>.done`` exists); finished runs are
skipped, so a killed recipe resumes where it stopped. A run that must run (chosen, unfinished)
pulls in every run it needs whose work folder is not complete (its marker is missing), since the
results folder holds only small JSON files, never the bundles and data later runs read.

A run starts from an empty work folder, runs its steps through ``execute(module, argv)``, deletes
its training checkpoints (the bundle is what later runs read), copies its kept files into the
results folder (each atomically) and writes its work marker last.

``OUT/recipe.json`` records the sizes and the exact command lines of every run; a results folder
made with other sizes (``--quick`` against the full recipe) is refused rather than mixed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

from model.core.atomic import write_bytes_atomic, write_json_atomic
from model.core.errors import GeoaudioError
from model.evaluation.recipe import COPY, SECTIONS, TRAINING_FILE, Run, Sizes

RECIPE_FILE = "recipe.json"
CHECKPOINTS = "checkpoints"  # training checkpoints (~250 MB each): deleted once a run has written its bundle
Execute = Callable[[str, list[str]], None]


class RecipeError(GeoaudioError, ValueError):
    """A recipe that cannot run or whose runs are not comparable; the message names the files."""


def work_marker(run: Run, work: Path) -> Path:
    """``WORK/<section>/<name>.done``: the run's work folder is complete."""
    return Path(work) / run.section / f"{run.name}.done"


def finished(run: Run, out: Path, work: Path) -> bool:
    """Whether the run's kept files are all in the results folder (data runs: its work marker)."""
    if not run.keep:
        return work_marker(run, work).is_file()
    folder = Path(out) / run.section / run.name
    return all((folder / name).is_file() for name in run.keep.values())


def plan(runs: Sequence[Run], out: Path, work: Path, only: str | None = None) -> list[Run]:
    """The runs to execute, in recipe order: the unfinished ones of ``only`` (every section when
    None), plus every run they need whose work folder is incomplete."""
    if only is not None and only not in SECTIONS:
        raise RecipeError(f"unknown section {only!r} (known: {', '.join(SECTIONS)})")
    by_id = {r.id: r for r in runs}
    todo = {r.id for r in runs if (only is None or r.section == only) and not finished(r, out, work)}
    pending = list(todo)
    while pending:
        for need in by_id[pending.pop()].needs:
            if need not in todo and not work_marker(by_id[need], work).is_file():
                todo.add(need)
                pending.append(need)
    return [r for r in runs if r.id in todo]


def run_one(run: Run, out: Path, work: Path, execute: Execute) -> None:
    """Execute one run from an empty work folder, keep its files, mark its work folder complete."""
    folder = Path(work) / run.section / run.name
    shutil.rmtree(folder, ignore_errors=True)
    work_marker(run, work).unlink(missing_ok=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for step in run.steps:
        print(f"[{run.id}] {step.shell()}", flush=True)
        if step.module == COPY:
            shutil.copytree(step.argv[0], step.argv[1])
        else:
            execute(step.module, list(step.argv))
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)  # later runs read bundles, never checkpoints
    for source, name in run.keep.items():
        path = folder / source
        if not path.is_file():
            raise RecipeError(f"{run.id}: the run did not write {path}")
        target = Path(out) / run.section / run.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, path.read_bytes())
    write_json_atomic(work_marker(run, work), {"commands": [s.shell() for s in run.steps]})


def write_recipe_record(out: Path, runs: Iterable[Run], sizes: Sizes) -> Path:
    """``OUT/recipe.json`` (sizes and commands of every run); RecipeError when the folder holds
    results of other sizes."""
    path = Path(out) / RECIPE_FILE
    if path.is_file():
        old = json.loads(path.read_text()).get("sizes")
        if old != json.loads(json.dumps(sizes.to_dict())):
            raise RecipeError(f"{path}: this results folder was made with other sizes "
                              f"({'--quick' if old and old.get('quick') else 'the full recipe'}); "
                              "use another --out or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, {"sizes": sizes.to_dict(),
                                    "runs": {r.id: [s.shell() for s in r.steps] for r in runs}})


def training_records(out: Path, section: str, prefix: str = "") -> dict[str, dict]:
    """``{run name: training.json}`` of the runs of ``section`` whose names start with ``prefix``."""
    folder = Path(out) / section
    files = sorted(folder.glob(f"{prefix}*/{TRAINING_FILE}")) if folder.is_dir() else []
    return {f.parent.name: json.loads(f.read_text()) for f in files}


def check_equal_steps(records: dict[str, dict], what: str) -> int:
    """The one number of optimiser steps all ``records`` made; RecipeError naming the runs when
    they differ or one was truncated by a safety stop."""
    if not records:
        raise RecipeError(f"{what}: no training.json to compare")
    truncated = sorted(name for name, r in records.items() if r.get("truncated"))
    if truncated:
        raise RecipeError(f"{what}: {', '.join(truncated)} stopped early (truncated); not comparable")
    steps = {name: r.get("steps") for name, r in records.items()}
    if len(set(steps.values())) != 1:
        listed = ", ".join(f"{name}: {s}" for name, s in sorted(steps.items()))
        raise RecipeError(f"{what}: runs made different numbers of optimiser steps ({listed})")
    return next(iter(steps.values()))


def pretraining_records(out: Path) -> dict[str, dict]:
    """``{section/name: training.json}`` of every pretraining run: the losses and the initialisations."""
    return {**{f"losses/{k}": v for k, v in training_records(out, "losses").items()},
            **{f"inits/{k}": v for k, v in training_records(out, "inits", "pretrain-").items()}}


def check_budgets(out: Path) -> int | None:
    """The optimiser steps every pretraining run made (the loss runs and the initialisations share
    data, batch and epochs), checked equal by :func:`check_equal_steps`; None before any ran."""
    records = pretraining_records(out)
    return check_equal_steps(records, f"{out}: pretraining runs") if records else None


def run_recipe(runs: Sequence[Run], sizes: Sizes, out: Path, work: Path, execute: Execute,
               only: str | None = None) -> list[Run]:
    """Record the recipe, execute what :func:`plan` chooses, check the budgets; returns the runs done."""
    write_recipe_record(out, runs, sizes)
    todo = plan(runs, out, work, only)
    skipped = sum(1 for r in runs if (only is None or r.section == only)) - sum(
        1 for r in todo if only is None or r.section == only)
    print(f"{len(todo)} runs to do, {skipped} finished and skipped", flush=True)
    for run in todo:
        run_one(run, out, work, execute)
    check_budgets(out)
    return todo
