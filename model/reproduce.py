"""``python -m model.reproduce --data-root ROOT --init BUNDLE --out DIR``: the paper's tables by one command.

Runs every cell of the SoundingEarth paper's downstream tables that the data under ROOT allows
(datasets found by their public folder names: ``UCMerced_LandUse/Images``, ``AID``,
``NWPU-RESISC45``, ``DeepGlobe`` (with ``valid_ids.txt``), ``ADVANCE``, ``SoundingEarth``, or the
lower-case names ``python -m model.fetch`` unpacks to; missing ones are skipped and listed), each
with the reference protocol (docs/fidelity.md), and writes ``DIR/table.md`` and ``DIR/table.csv``:
the paper's figure beside each measured one and the difference. ``--quick`` runs one epoch per
cell (a smoke test). Cells already done are not run again. The plan and the table:
:mod:`model.evaluation.reproduce`.
"""
from __future__ import annotations

from model.train.threads import prepare_process

prepare_process()  # before anything imports torch (model/train/threads.py)

import argparse
import csv
import io
import sys
from pathlib import Path

from model.core.cli import fail, run_cli, run_module


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True, help="folder holding the datasets under their public names")
    p.add_argument("--init", required=True, help="the bundle to evaluate (e.g. an imported published checkpoint)")
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"],
                   help="which of the paper's columns to compare with (default resnet18)")
    p.add_argument("--out", required=True, help="output folder: one folder per cell, table.md, table.csv")
    p.add_argument("--quick", action="store_true", help="one epoch per cell: a smoke test of the whole chain")
    p.add_argument("--seed", type=int, default=0, help="training seed of every cell (default 0)")
    return p


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["benchmark", "metric", "paper", "measured", "difference"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    from model.core.atomic import write_text_atomic
    from model.evaluation.reproduce import plan, run_cells, table_rows, to_markdown

    args = build_parser().parse_args(argv)
    root, out = Path(args.data_root), Path(args.out)
    if not root.is_dir():
        fail(f"{root}: no such data folder")
    cells, missing = plan(root, args.init, args.arch, out, args.quick, args.seed)
    if not cells:
        fail(f"{root}: none of the paper's datasets is there under its public folder name "
             f"(skipped: {', '.join(missing)}); see python -m model.fetch --list")
    if missing:
        print(f"skipped, no data: {', '.join(missing)}")
    failed = run_cells(cells, run_module)
    rows = table_rows(cells, args.arch)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "table.md", to_markdown(rows, args.arch, missing, args.quick, failed))
    write_text_atomic(out / "table.csv", _csv(rows))
    note = f"; failed: {', '.join(failed)}" if failed else ""
    print(f"wrote {out / 'table.md'} and {out / 'table.csv'} ({len(rows)} figures{note})")
    return 2 if failed and not rows else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
