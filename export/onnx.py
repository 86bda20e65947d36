"""Export a bundle's graphs to ONNX, check them against PyTorch, optionally quantise them to INT8.

    python -m export.onnx --bundle B [--int8 --calibration SRC] [--fp16] [--opset N]
                          [--exporter dynamo|torchscript] [--parity-tiles SRC ...] [--parity-audio F ...]

Writes into the bundle folder, for every part the bundle has (graphs and names: ``export.graphs``):
``image_encoder.onnx``, ``image_soundscape.onnx`` (soundscape head), ``landcover.onnx`` (land-cover
head), ``audio_encoder.onnx``; with ``--fp16`` also ``{graph}.fp16.onnx``, with ``--int8`` also
``{graph}.int8.onnx`` for the image graphs; and the manifest ``onnx.json``.

- Batch is a dynamic axis; the opset is torch.onnx's default (20 with torch 2.14) unless ``--opset``.
- Constants are folded, so batch norm is folded into the convolutions (INT8 relies on it).
- Each file is stamped with the bundle's content hash (``metadata_props`` ``geoaudio.bundle_hash``)
  and passes ``onnx.checker.check_model``.
- Parity: every graph runs in ONNX Runtime (CPU) and in PyTorch on real inputs (tiles cut from
  ``RGB.byte.tif`` of the shared test data and from ``--parity-tiles``; log-mel chunks of the shared
  robin and humpback recordings or ``--parity-audio``). Max abs error and mean/min cosine are
  printed; outside the tolerance (``export.parity``: float32 relative error 1e-3 and cosine 0.9999,
  float16 1e-2 and 0.999) nothing is installed and the exit status is non-zero.
- ``--fp16``: the model is exported in float16 by torch itself (onnxconverter-common is not
  needed) behind a float32 interface: the graph casts its input to float16 and its outputs back.
- ``--int8``: static quantisation (``export.int8``) calibrated on tiles of SRC (a GeoTIFF, an image
  or a folder of them); a quarter of those tiles is held out to report INT8-vs-float32 accuracy.

All files are written to temporary names first and renamed into place only when every check passed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from export.calibration import load_tiles, split_holdout
from export.graphs import GRAPHS, IMAGE_GRAPHS, available_graphs, build_graph, example_input, graph_spec
from export.int8 import accuracy_line, int8_accuracy, quantize_graph
from export.manifest import (Staging, merge_entries, onnx_name, read_manifest, stamp_model, staging,
                             write_manifest)
from export.parity import (DEFAULT_AUDIO_SOURCES, DEFAULT_TILE_SOURCES, FP16, FP32, ParityInputs, ParityStats,
                           Tolerance, check, compare_outputs, existing, run_torch)
from export.sessions import open_session, run_batched
from model.bundle.files import ONNX_MANIFEST
from model.core.errors import GeoaudioError, one_line

EXPORTERS = ("dynamo", "torchscript")
CALIBRATION_TILES = 64
HOLDOUT = 0.25
BATCH = 16


class ExportError(GeoaudioError, ValueError):
    """A graph that could not be exported; the message names it and the reason."""


def default_opset() -> int:
    """torch.onnx's default opset (20 with torch 2.14; 18 if the constant cannot be found)."""
    try:
        from torch.onnx._constants import ONNX_DEFAULT_OPSET
    except ImportError:
        return 18
    return int(ONNX_DEFAULT_OPSET)


def to_onnx(module, example, input_name: str, output_names: Sequence[str], opset: int,
            exporter: str = "dynamo"):
    """Export ``module`` (traced at ``example``) to an in-memory ``onnx.ModelProto`` with a dynamic
    batch axis and folded constants. ``exporter``: "dynamo" (torch.export) or "torchscript"."""
    import onnx
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    common: dict[str, Any] = dict(input_names=[input_name], output_names=list(output_names),
                                  opset_version=opset)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            program = torch.onnx.export(module, (example,), dynamo=True, optimize=True, verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), **common)
            return program.model_proto
        buffer = io.BytesIO()
        axes = {name: {0: "batch"} for name in [input_name, *output_names]}
        torch.onnx.export(module, (example,), buffer, dynamo=False, do_constant_folding=True,
                          dynamic_axes=axes, **common)
        return onnx.load_from_string(buffer.getvalue())


def _trace(bundle, graph: str, precision: str, opset: int, exporter: str, bundle_hash: str):
    """The stamped, checked ``onnx.ModelProto`` of one graph."""
    import onnx

    spec = graph_spec(bundle, graph)
    module = build_graph(bundle, graph, half=precision == "fp16")
    try:
        model = to_onnx(module, example_input(bundle, graph), spec.input_name, spec.output_names, opset, exporter)
    except (GeoaudioError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 - exporters raise many types; report one line
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ExportError(f"{graph} ({precision}): ONNX export with the {exporter} exporter failed "
                          f"({one_line(e)}); try --exporter {other}") from None
    stamp_model(model, bundle_hash, graph, precision)
    onnx.checker.check_model(model)
    return model


def _parity(bundle, graph: str, path: Path, label: str, inputs: ParityInputs) -> list[ParityStats]:
    """Outputs of the ONNX file at ``path`` against PyTorch float32 on the graph's real inputs."""
    spec = graph_spec(bundle, graph)
    x = inputs.for_graph(graph)
    reference = run_torch(build_graph(bundle, graph), x)
    candidate = run_batched(open_session(path, "cpu"), x, BATCH, spec.output_names)
    return compare_outputs(label, spec.output_names, reference, candidate)


def _export_one(stage: Staging, bundle, graph: str, precision: str, opset: int, exporter: str, bundle_hash: str,
                inputs: ParityInputs, log: Callable[[str], None],
                tolerance: Tolerance | None = None) -> tuple[Path, dict[str, Any]]:
    """Export one graph to a file staged in ``stage``: (its temporary path, its manifest entry);
    ParityError outside the tolerance (the staging then installs nothing)."""
    import onnx

    spec = graph_spec(bundle, graph)
    model = _trace(bundle, graph, precision, opset, exporter, bundle_hash)
    name = onnx_name(graph, precision)
    tmp = stage.temp(bundle.path / name)
    onnx.save(model, str(tmp))
    stats = _parity(bundle, graph, tmp, graph if precision == "fp32" else f"{graph}.{precision}", inputs)
    for s in stats:
        log(f"parity {s.line()}")
    check(stats, tolerance or (FP16 if precision == "fp16" else FP32), what=f"{bundle.path / name}: ")
    entry = {"file": name, "graph": graph, "precision": precision, "bundle_hash": bundle_hash,
             "opset": opset, "exporter": exporter, "input": {spec.input_name: ["batch", *spec.input_shape]},
             "outputs": list(spec.output_names), "parity": [s.to_dict() for s in stats]}
    return tmp, entry


def _quantise_one(stage: Staging, bundle, graph: str, fp32: Path, source: Path, tiles: np.ndarray,
                  bundle_hash: str, log: Callable[[str], None]) -> dict[str, Any]:
    """INT8 version, staged in ``stage``, of the staged float32 image graph at ``fp32``; returns its
    manifest entry with its accuracy on held-out tiles (``tiles``: uint8 calibration tiles of
    ``source`` at the graph's tile size)."""
    spec = graph_spec(bundle, graph)
    calib, held_out = split_holdout(tiles, HOLDOUT)
    name = onnx_name(graph, "int8")
    tmp = stage.temp(bundle.path / name)
    quantize_graph(fp32, tmp, bundle.image_input.normalise(calib), bundle_hash, graph, spec.input_name)
    x = bundle.image_input.normalise(held_out)
    ref = run_batched(open_session(fp32, "cpu"), x, BATCH, spec.output_names)
    got = run_batched(open_session(tmp, "cpu"), x, BATCH, spec.output_names)
    acc = int8_accuracy(graph, list(spec.output_names), ref, got)
    log(accuracy_line(acc))
    entry = {"file": name, "graph": graph, "precision": "int8", "bundle_hash": bundle_hash,
             "input": {spec.input_name: ["batch", *spec.input_shape]}, "outputs": list(spec.output_names),
             "calibration": {"source": str(source), "tiles": int(len(calib)), "held_out": int(len(held_out)),
                             "method": "MinMax, QDQ, per-channel int8 weights, uint8 activations"},
             "accuracy_vs_fp32": acc}
    return entry


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def export_bundle(bundle_dir: str | os.PathLike, *, opset: int | None = None, exporter: str = "dynamo",
                  fp16: bool = False, calibration: str | os.PathLike | None = None,
                  calibration_tiles: int = CALIBRATION_TILES, parity_tiles: Sequence[str | os.PathLike] = (),
                  parity_audio: Sequence[str | os.PathLike] = (), graphs: Sequence[str] | None = None,
                  tolerance: Tolerance | None = None, log: Callable[[str], None] = print,
                  progress: bool = False) -> dict[str, Any]:
    """Export (and check, and optionally quantise) a bundle's graphs; returns the manifest written.

    ``calibration``: a tile source for INT8 (None: no INT8). ``parity_tiles`` / ``parity_audio``
    add to the shared test data (used when present). ``graphs`` restricts the export to some graphs.
    ``tolerance`` replaces the default parity tolerance (FP32 / FP16 of ``export.parity``).
    Nothing is installed unless every graph passes its parity check.
    """
    from tqdm import tqdm

    from model.bundle import load

    bundle = load(bundle_dir)
    bundle_hash = bundle.content_hash()
    opset = int(opset or default_opset())
    unknown = sorted(set(graphs or []) - set(GRAPHS))
    if unknown:
        raise ExportError(f"unknown graphs {unknown} (known: {', '.join(GRAPHS)})")
    todo = [g for g in available_graphs(bundle) if graphs is None or g in graphs]
    if not todo:
        raise ExportError(f"{bundle.path}: nothing to export (graphs {list(graphs or [])} not in this bundle)")
    tile_sources = existing(DEFAULT_TILE_SOURCES) + [Path(p) for p in parity_tiles]
    audio_sources = [Path(p) for p in parity_audio] or existing(DEFAULT_AUDIO_SOURCES)
    inputs = ParityInputs(bundle, tile_sources, audio_sources)
    calib_tiles = {}  # tile size -> uint8 tiles, read before any export so a bad source fails fast
    if calibration is not None:
        for size in sorted({graph_spec(bundle, g).input_shape[-1] for g in todo if g in IMAGE_GRAPHS}):
            calib_tiles[size] = load_tiles(calibration, size, limit=calibration_tiles)
    precisions = ["fp32"] + (["fp16"] if fp16 else [])
    steps = len(todo) * len(precisions) + (sum(g in IMAGE_GRAPHS for g in todo) if calibration else 0)
    new_entries: list[dict[str, Any]] = []
    with staging() as stage, tqdm(total=steps, desc="export.onnx", unit="graph", disable=not progress,
                                  file=sys.stderr) as bar:
        for graph in todo:
            fp32 = None
            for precision in precisions:
                bar.set_postfix_str(f"{graph} {precision}")
                tmp, entry = _export_one(stage, bundle, graph, precision, opset, exporter, bundle_hash, inputs, log,
                                         tolerance)
                new_entries.append(entry)
                fp32 = fp32 or tmp
                bar.update()
            if calibration is not None and graph in IMAGE_GRAPHS:
                bar.set_postfix_str(f"{graph} int8")
                tiles = calib_tiles[graph_spec(bundle, graph).input_shape[-1]]
                new_entries.append(_quantise_one(stage, bundle, graph, fp32, Path(calibration), tiles, bundle_hash,
                                                 log))
                bar.update()
    entries = merge_entries(read_manifest(bundle.path, ONNX_MANIFEST), new_entries, bundle_hash, bundle.path)
    manifest = {"bundle_hash": bundle_hash, "opset": opset, "exporter": exporter,
                "parity_inputs": {"tiles": [str(p) for p in tile_sources], "audio": [str(p) for p in audio_sources]},
                "versions": _versions(), "files": entries}
    write_manifest(bundle.path, ONNX_MANIFEST, manifest)
    return manifest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m export.onnx",
        description="Export a bundle's encoders and heads to ONNX (float32, optionally float16 and INT8), "
                    "check each graph against PyTorch on real tiles and recordings, and record them "
                    "in the bundle's onnx.json.",
        epilog="example: python -m export.onnx --bundle runs/av18/bundle --int8 --calibration scene.tif")
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder (bundle.json + weights.safetensors)")
    p.add_argument("--int8", action="store_true", help="also write static INT8 versions of the image graphs")
    p.add_argument("--calibration", type=Path, metavar="SRC",
                   help="INT8 calibration tiles: a GeoTIFF, an image, or a folder of them")
    p.add_argument("--calibration-tiles", type=int, default=CALIBRATION_TILES, metavar="N",
                   help=f"tiles taken from SRC, spread over it; a quarter is held out for the accuracy "
                        f"report (default {CALIBRATION_TILES})")
    p.add_argument("--fp16", action="store_true",
                   help="also write float16 graphs (float32 in and out) for GPUs")
    p.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default: torch.onnx's, {default_opset()})")
    p.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                   help="torch.onnx exporter: dynamo (torch.export, the default) or the legacy torchscript one")
    p.add_argument("--parity-tiles", type=Path, nargs="+", default=[], metavar="SRC",
                   help="extra GeoTIFFs or image folders for the parity check (e.g. a synthetic scene)")
    p.add_argument("--parity-audio", type=Path, nargs="+", default=[], metavar="FILE",
                   help="recordings for the audio encoder's parity check (default: the shared test clips)")
    p.add_argument("--graphs", nargs="+", default=None, metavar="GRAPH",
                   help="export only these graphs (image_encoder, image_soundscape, landcover, audio_encoder)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from model.core.cli import fail
    from tqdm import tqdm

    args = parse_args(argv)
    if args.int8 and args.calibration is None:
        fail("--int8 needs --calibration SRC (a GeoTIFF, an image or a folder of images)")
    if args.calibration is not None and not args.int8:
        fail("--calibration is only used with --int8")
    if args.opset is not None and not 17 <= args.opset <= 23:
        fail(f"--opset must be between 17 and 23, got {args.opset}")
    if args.calibration_tiles < 2:
        fail(f"--calibration-tiles must be at least 2, got {args.calibration_tiles}")
    manifest = export_bundle(args.bundle, opset=args.opset, exporter=args.exporter, fp16=args.fp16,
                             calibration=args.calibration if args.int8 else None,
                             calibration_tiles=args.calibration_tiles, parity_tiles=args.parity_tiles,
                             parity_audio=args.parity_audio, graphs=args.graphs, log=tqdm.write, progress=True)
    names = ", ".join(e["file"] for e in manifest["files"])
    print(f"wrote {names} and {ONNX_MANIFEST} to {args.bundle} (bundle {manifest['bundle_hash']}, "
          f"opset {manifest['opset']})")
    return 0


if __name__ == "__main__":
    from model.core.cli import run_cli

    sys.exit(run_cli(main))
