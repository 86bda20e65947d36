"""Compile a bundle's graphs to TensorRT engines with torch-tensorrt and check them on the GPU.

    python -m export.trt --bundle B [--precision fp32|fp16|int8] [--max-batch N] [--calibration SRC]

Needs a CUDA GPU and torch-tensorrt (the optional extra: ``pip install 'geoaudio[trt]'``). Without
them the command prints one line saying what is missing and exits with status 2, writing nothing.

For every graph of ``export.graphs`` the bundle has (image encoder, image + soundscape head, land
cover, audio encoder): ``torch.export`` with a dynamic batch of 1..``max_batch``, then
``torch_tensorrt.dynamo.compile`` (optimisation profile min 1, opt ``max_batch / 2``, max
``max_batch``), saved with ``torch_tensorrt.save`` as ``{graph}.trt.ep`` (an ExportedProgram that
``torch_tensorrt.load`` reads). ``trt.json`` records the bundle hash, precision, files and checks.

Precision:
- ``fp32``: TF32 disabled, so engines match PyTorch to the float32 tolerance;
- ``fp16``: the model is cast to float16 inside a float32 interface (explicit typing);
- ``int8``: post-training quantisation with NVIDIA ModelOpt (``pip install nvidia-modelopt``),
  calibrated on ``--calibration`` tiles; the INT8 engines are reported, not held to a tolerance.

Parity: engine outputs on the GPU against PyTorch float32 on the CPU, on the same real inputs as
``export.onnx`` (``export.parity``); outside the tolerance nothing is installed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from export.calibration import load_tiles
from export.manifest import staging, trt_name, write_manifest
from export.parity import (DEFAULT_AUDIO_SOURCES, DEFAULT_TILE_SOURCES, FP16, FP32, ParityInputs, check,
                           compare_outputs, existing, run_torch)
from model.bundle.files import META_FILE, TRT_MANIFEST
from model.core.errors import GeoaudioError, one_line

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 64
CALIBRATION_TILES = 64


class TrtExportError(GeoaudioError, ValueError):
    """A graph torch-tensorrt could not compile or save; the message names it."""


def _quantise_int8(module, calibration: np.ndarray, batch: int = 16):
    """NVIDIA ModelOpt INT8 post-training quantisation of a CUDA module, calibrated on ``calibration``."""
    import torch

    try:
        import modelopt.torch.quantization as mtq
    except ImportError:
        raise TrtExportError("--precision int8 needs NVIDIA ModelOpt: pip install nvidia-modelopt") from None

    def forward_loop(m) -> None:
        with torch.no_grad():
            for i in range(0, len(calibration), batch):
                m(torch.from_numpy(calibration[i:i + batch]).cuda())

    mtq.quantize(module, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)
    return module


def compile_graph(module, example, max_batch: int, precision: str):
    """A torch-tensorrt compiled module for one graph, batch dynamic in 1..max_batch."""
    import contextlib

    import torch
    import torch_tensorrt

    batch = torch.export.Dim("batch", min=1, max=max_batch)
    shape = tuple(example.shape[1:])
    spec = torch_tensorrt.Input(min_shape=(1, *shape), opt_shape=(max(1, max_batch // 2), *shape),
                                max_shape=(max_batch, *shape), dtype=torch.float32)
    settings: dict[str, Any] = {"min_block_size": 1}
    context: Any = contextlib.nullcontext()
    if precision == "fp32":
        settings["disable_tf32"] = True
    if precision == "int8":
        from modelopt.torch.quantization.utils import export_torch_mode

        settings["enabled_precisions"] = {torch.int8}
        context = export_torch_mode()
    with torch.no_grad(), context:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
        compiled = torch_tensorrt.dynamo.compile(program, inputs=[spec], **settings)
    return compiled, {0: batch}


def _run_compiled(compiled, x: np.ndarray, batch: int) -> list[np.ndarray]:
    import torch

    parts: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = compiled(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).cuda())
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if not parts:
                parts = [[] for _ in outs]
            for store, o in zip(parts, outs):
                store.append(o.float().cpu().numpy())
    return [np.concatenate(p) for p in parts]


def export_engines(bundle_dir: str | os.PathLike, *, precision: str = "fp16", max_batch: int = DEFAULT_MAX_BATCH,
                   calibration: str | os.PathLike | None = None, parity_tiles: Sequence[str | os.PathLike] = (),
                   parity_audio: Sequence[str | os.PathLike] = (), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Compile, check and install the TensorRT engines of a bundle; returns the manifest written."""
    import torch
    import torch_tensorrt
    from tqdm import tqdm

    from export.graphs import available_graphs, build_graph, example_input, graph_spec
    from model.bundle import load

    bundle = load(bundle_dir)
    bundle_hash = bundle.content_hash()
    inputs = ParityInputs(bundle, existing(DEFAULT_TILE_SOURCES) + [Path(p) for p in parity_tiles],
                    [Path(p) for p in parity_audio] or existing(DEFAULT_AUDIO_SOURCES))
    entries = []
    with staging() as stage:
        for graph in tqdm(available_graphs(bundle), desc="export.trt", unit="graph", file=sys.stderr):
            spec = graph_spec(bundle, graph)
            module = build_graph(bundle, graph, half=precision == "fp16").cuda()
            if precision == "int8" and graph != "audio_encoder":
                tiles = load_tiles(calibration, spec.input_shape[-1], limit=CALIBRATION_TILES)
                module = _quantise_int8(module, bundle.image_input.normalise(tiles))
            example = example_input(bundle, graph, batch=2).cuda()
            try:
                compiled, dims = compile_graph(module, example, max_batch, precision)
                tmp = str(stage.temp(bundle.path / trt_name(graph)))
                torch_tensorrt.save(compiled, tmp, output_format="exported_program", arg_inputs=[example],
                                    dynamic_shapes=(dims,), retrace=True)
            except (GeoaudioError, OSError):
                raise
            except Exception as e:  # noqa: BLE001 - TensorRT raises many types; report one line
                raise TrtExportError(f"{graph}: TensorRT compilation failed ({one_line(e)})") from None
            x = inputs.for_graph(graph)
            reference = run_torch(build_graph(bundle, graph), x)
            candidate = _run_compiled(torch_tensorrt.load(tmp).module(), x, min(max_batch, 16))
            stats = compare_outputs(f"{graph}.trt", spec.output_names, reference, candidate)
            for s in stats:
                log(f"parity {s.line()}")
            if precision != "int8" or graph == "audio_encoder":
                check(stats, FP16 if precision == "fp16" else FP32, what=f"{bundle.path / trt_name(graph)}: ")
            entries.append({"file": trt_name(graph), "graph": graph, "precision": precision,
                            "max_batch": max_batch, "parity": [s.to_dict() for s in stats]})
    manifest = {"bundle_hash": bundle_hash, "precision": precision, "max_batch": max_batch,
                "device": torch.cuda.get_device_name(0), "versions": {"torch": torch.__version__,
                                                                    "torch_tensorrt": torch_tensorrt.__version__},
                "files": entries}
    write_manifest(bundle.path, TRT_MANIFEST, manifest)
    return manifest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m export.trt",
        description="Compile a bundle's graphs to TensorRT engines (torch-tensorrt), check them against "
                    "PyTorch on the GPU and save them in the bundle (trt.json lists them). Needs a CUDA GPU "
                    "and pip install 'geoaudio[trt]'.",
        epilog="example: python -m export.trt --bundle runs/av18/bundle --precision fp16 --max-batch 64")
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16",
                   help="engine precision (default fp16; int8 needs nvidia-modelopt and --calibration)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                   help=f"largest batch the engines accept (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--calibration", type=Path, metavar="SRC",
                   help="INT8 calibration tiles: a GeoTIFF, an image or a folder of them")
    p.add_argument("--parity-tiles", type=Path, nargs="+", default=[], metavar="SRC",
                   help="extra GeoTIFFs or image folders for the parity check")
    p.add_argument("--parity-audio", type=Path, nargs="+", default=[], metavar="FILE",
                   help="recordings for the audio encoder's parity check (default: the shared test clips)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    from export.torch_backend import trt_unavailable
    from model.core.cli import fail

    args = parse_args(argv)
    if args.max_batch < 1:
        fail(f"--max-batch must be at least 1, got {args.max_batch}")
    if args.precision == "int8" and args.calibration is None:
        fail("--precision int8 needs --calibration SRC (a GeoTIFF, an image or a folder of images)")
    if not (args.bundle / META_FILE).is_file():
        fail(f"{args.bundle}: not a bundle folder ({META_FILE} missing)")
    why = trt_unavailable()
    if why:
        fail(why)
    manifest = export_engines(args.bundle, precision=args.precision, max_batch=args.max_batch,
                              calibration=args.calibration, parity_tiles=args.parity_tiles,
                              parity_audio=args.parity_audio, log=tqdm.write)
    names = ", ".join(e["file"] for e in manifest["files"])
    print(f"wrote {names} and {TRT_MANIFEST} to {args.bundle} ({args.precision}, batch 1..{args.max_batch})")
    return 0


if __name__ == "__main__":
    from model.core.cli import run_cli

    sys.exit(run_cli(main))
