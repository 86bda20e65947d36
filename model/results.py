"""``python -m model.results run|report``: every results table of docs/results.md by one command.

``run --out docs/results [--work runs/results-work] [--quick] [--only SECTION]``: runs the recipe
(:mod:`model.evaluation.recipe`: data, losses, inits, heads) with resume
(:mod:`model.evaluation.recipe_run`); data, bundles and logs go to ``--work``, and only each run's
small JSON files (``metrics.json``, ``training.json``, ...) to ``OUT/<section>/<run>/``. Each step
is the command line ``python -m MODULE ARGS`` it prints, run in this process through the module's
``main(ARGS)`` (torch is imported once for the whole recipe, not once per step).

``report --runs docs/results --out docs/results.md``: renders the Markdown from those files only
(:mod:`model.evaluation.results_doc`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.core.cli import run_cli, run_module

DEFAULT_WORK = "runs/results-work"


def run(args: argparse.Namespace) -> int:
    from model.evaluation.recipe import build_recipe, sizes_of
    from model.evaluation.recipe_run import run_recipe

    runs = build_recipe(args.work, args.quick)
    done = run_recipe(runs, sizes_of(args.quick), Path(args.out), Path(args.work), run_module, args.only)
    print(f"done: {len(done)} runs; results in {args.out}")
    return 0


def report(args: argparse.Namespace) -> int:
    from model.core.atomic import write_text_atomic
    from model.evaluation.results_doc import render

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, render(Path(args.runs), runs_label=args.runs, out_label=args.out))
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from model.evaluation.recipe import SECTIONS

    p = argparse.ArgumentParser(prog="python -m model.results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the recipe (skips finished runs)")
    r.add_argument("--out", required=True, help="results folder for the small JSON files (e.g. docs/results)")
    r.add_argument("--work", default=DEFAULT_WORK, help=f"data, bundles and logs (default {DEFAULT_WORK})")
    r.add_argument("--quick", action="store_true", help="every size and epoch shrunk (a test, not results)")
    r.add_argument("--only", choices=SECTIONS, help="one section (and the runs it needs)")
    r.set_defaults(func=run)
    s = sub.add_parser("report", help="render docs/results.md from the results folder")
    s.add_argument("--runs", required=True, help="results folder written by run (e.g. docs/results)")
    s.add_argument("--out", required=True, help="Markdown file (e.g. docs/results.md)")
    s.set_defaults(func=report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
