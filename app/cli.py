"""``geoaudio``: one console script for every command of the project, the way ``rio`` wraps rasterio.

``geoaudio COMMAND ARGS...`` runs what ``python -m MODULE ARGS...`` runs: the command's module is
imported only when that command is called, its ``main(argv)`` gets the remaining arguments, and
the exit status and ``error: ...`` lines are the same (every ``python -m`` entry and this script run
``main`` through :func:`model.core.cli.run_cli`). A command's help is its module's own, so its usage line says ``python -m MODULE``.

``geoaudio --help`` lists the commands, one line each. The ``python -m`` entry points stay.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import sys
from dataclasses import dataclass
from typing import Sequence

from model.core.cli import run_cli


@dataclass(frozen=True)
class Command:
    """One subcommand: the module holding its ``main(argv)`` and how ``python -m`` runs it."""

    module: str
    summary: str
    entry: str = ""

    @property
    def python_m(self) -> str:
        """The name ``python -m`` takes (a package, when ``main`` lives in a module inside it)."""
        return self.entry or self.module


# Each module's `python -m` entry is `sys.exit(run_cli(main))` (tests/app/test_cli.py checks it).
COMMANDS: dict[str, Command] = {
    "synth": Command("model.synth.__main__", "synthetic world: pairs, a scene, labelled sets",
                     entry="model.synth"),
    "random-bundle": Command("model.synth.random_bundle", "write a small random-initialised bundle"),
    "prepare": Command("model.data.prepare", "crop and resize a dataset's images into a cache"),
    "import-soundingearth": Command("model.import_soundingearth", "convert a SoundingEarth checkpoint into a bundle"),
    "fetch": Command("model.fetch", "download the datasets and the published weights"),
    "reproduce": Command("model.reproduce", "the paper's tables, reference protocols"),
    "pretrain": Command("model.pretrain", "audiovisual pretraining on SoundingEarth pairs"),
    "baselines": Command("model.baselines", "image-only SimCLR / MoCo baselines"),
    "finetune": Command("model.finetune", "fine-tune on scene classification or segmentation"),
    "gallery": Command("model.gallery", "embed a folder's recordings as the audio gallery"),
    "soundscape": Command("model.soundscape", "fit a bundle's soundscape head from audio metadata"),
    "bundle": Command("model.bundle.merge", "work with bundles: merge the heads of two bundles",
                      entry="model.bundle"),
    "evaluate": Command("model.evaluate", "evaluate: retrieval, ADVANCE probe, run reports"),
    "onnx": Command("export.onnx", "export a bundle to ONNX (optionally INT8), check it"),
    "trt": Command("export.trt", "compile a bundle to TensorRT engines (CUDA GPU)"),
    "map": Command("geo.map", "map GeoTIFFs to soundscape and land-cover products"),
    "query": Command("geo.query", "heatmap: where a mapped scene sounds like a query"),
    "evaluate-map": Command("geo.evaluate", "score a mapped scene against its ground truth"),
    "demo": Command("app.demo", "build the built-in demo (bundle and mapped scene)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: ``--help`` and ``--version``; each command parses its own arguments."""
    parser = argparse.ArgumentParser(
        prog="geoaudio", usage="%(prog)s [-h] [--version] COMMAND [ARGS ...]",
        description="Learn what places sound like from aerial imagery, and map it.",
        epilog=command_list(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("command", nargs="?", metavar="COMMAND", help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="the command's own arguments ('geoaudio COMMAND --help')")
    return parser


def command_list() -> str:
    """The commands, one line each (name and summary), and how they relate to ``python -m``."""
    width = max(map(len, COMMANDS)) + 2
    lines = [f"  {name:<{width}}{command.summary}" for name, command in COMMANDS.items()]
    return ("commands:\n" + "\n".join(lines) + "\n\n'geoaudio COMMAND ARGS' runs what "
            "'python -m MODULE ARGS' runs;\n'geoaudio COMMAND --help' shows the command's options.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("geoaudio")
    except PackageNotFoundError:
        return "unknown"


def run(name: str, argv: Sequence[str]) -> int:
    """Run command ``name`` with ``argv`` as ``python -m`` runs it; return its exit status."""
    command = COMMANDS[name]
    main = importlib.import_module(command.module).main
    call = functools.partial(main, list(argv))
    return run_cli(call)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geoaudio`` console script: ``geoaudio COMMAND ARGS...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        return run(args[0], args[1:])
    parser = build_parser()
    name = parser.parse_args(args).command  # exits here on --help, --version or an unknown option
    parser.error(f"unknown command {name!r} (see 'geoaudio --help')" if name else "a command is required")


if __name__ == "__main__":
    sys.exit(main())
