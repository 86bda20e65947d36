"""Static INT8 quantisation of the exported image graphs with ONNX Runtime.

Recipe (fast on CPUs with VNNI/AVX2 and accurate for ResNets):

1. the float32 graph is exported with constant folding, so batch norm is already folded into the
   convolutions (a quantised Conv + ReLU then runs as one integer kernel);
2. ``onnxruntime.quantization.shape_inference.quant_pre_process`` (symbolic shape inference and
   ONNX Runtime's basic graph optimisations);
3. ``quantize_static`` in QDQ format: weights int8 per output channel (symmetric), activations
   uint8 per tensor (asymmetric), ranges from MinMax calibration on real tiles.

The soundscape head (distances to prototypes and the softmax) and the land-cover softmax stay in
float32: they are cheap, and 8-bit probabilities would flip close calls between classes.

Quantised graphs are not held to the float32 tolerance; :func:`int8_accuracy` reports how close
they are to the float32 graph on held-out tiles: mean embedding cosine, and class agreement
(soundscape: arg-max class per tile; land cover: arg-max class per pixel).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from export.manifest import stamp_model
from export.parity import class_agreement, per_sample_cosine
from model.core.atomic import temp_beside, write_atomic
from model.core.errors import GeoaudioError, one_line

CALIBRATION_BATCH = 8
FLOAT_OUTPUTS = ("scores", "probabilities")  # outputs computed in float32 after the encoder


class QuantisationError(GeoaudioError, ValueError):
    """A graph that ONNX Runtime could not quantise; the message names it."""


def _reader(x: np.ndarray, input_name: str, batch: int):
    """A CalibrationDataReader over normalised tiles (N, 3, H, W) in batches of ``batch``."""
    from onnxruntime.quantization import CalibrationDataReader

    class TileReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = (x[i:i + batch] for i in range(0, len(x), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._batches, None)
            return None if b is None else {input_name: np.ascontiguousarray(b, dtype=np.float32)}

    return TileReader()


def float_nodes(model) -> list[str]:
    """Names of the nodes kept in float32: everything downstream of the ``embedding`` tensor, and
    the node producing a ``probabilities`` output (the land-cover softmax)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    float_tensors = {"embedding"} if "scores" in outputs else set()
    keep: list[str] = []
    for node in graph.node:  # nodes are topologically sorted
        downstream = any(i in float_tensors for i in node.input)
        final_softmax = "probabilities" in node.output and node.op_type == "Softmax"
        if downstream or final_softmax:
            keep.append(node.name)
            float_tensors.update(node.output)
    return keep


def _pre_process(src: str | os.PathLike, dst: Path) -> None:
    """quant_pre_process (graph optimisation, batch norm folded into convolutions, ONNX shape
    inference). onnxruntime's symbolic shape inference is skipped: convolutional graphs need only
    ONNX's own shape inference, and on failure (the land-cover decoder's resize) the symbolic
    pass writes ``sym_shape_infer_temp.onnx`` and ``*.data`` files into the working directory."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize_graph(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray,
                   bundle_hash: str, graph: str, input_name: str = "image") -> Path:
    """Quantise a float32 ONNX graph (recipe in the module doc) with normalised calibration tiles
    ``calibration`` (N, 3, H, W) float32; writes ``out_path`` atomically, stamped with the bundle hash."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    out_path = Path(out_path)
    pre, quant = temp_beside(out_path), temp_beside(out_path)  # scratch graphs, deleted below
    try:
        _pre_process(fp32_path, pre)
        quantize_static(str(pre), str(quant), _reader(calibration, input_name, CALIBRATION_BATCH),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=float_nodes(onnx.load(str(pre))),
                        calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(str(quant))
        stamp_model(model, bundle_hash, graph, "int8")
        onnx.checker.check_model(model)
        write_atomic(out_path, lambda tmp: onnx.save(model, str(tmp)))
    except (GeoaudioError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 - ORT/onnx raise many types; report one line
        raise QuantisationError(f"{fp32_path}: INT8 quantisation failed ({one_line(e)})") from None
    finally:
        pre.unlink(missing_ok=True)
        quant.unlink(missing_ok=True)
    return out_path


def int8_accuracy(graph: str, output_names: list[str], fp32: list[np.ndarray],
                  int8: list[np.ndarray]) -> dict[str, Any]:
    """How close the INT8 outputs are to the float32 outputs on the same held-out tiles.

    ``embedding``: mean and minimum per-tile cosine; ``scores``: soundscape class agreement
    (fraction of tiles with the same arg-max class); ``probabilities``: land-cover pixel agreement
    (fraction of pixels with the same arg-max class) and mean per-tile cosine.
    """
    out: dict[str, Any] = {"graph": graph, "tiles": int(len(fp32[0]))}
    for name, a, b in zip(output_names, fp32, int8):
        if name == "embedding":
            cos = per_sample_cosine(a, b)
            out["embedding_cosine_mean"], out["embedding_cosine_min"] = float(cos.mean()), float(cos.min())
        elif name == "scores":
            out["soundscape_agreement"] = class_agreement(a, b)
        elif name == "probabilities":
            out["landcover_pixel_agreement"] = class_agreement(a, b)
            out["landcover_cosine_mean"] = float(per_sample_cosine(a, b).mean())
    return out


def accuracy_line(acc: dict[str, Any]) -> str:
    """One human-readable line of :func:`int8_accuracy`'s figures."""
    parts = [f"{acc['graph']} int8 vs fp32 on {acc['tiles']} held-out tiles:"]
    if "embedding_cosine_mean" in acc:
        parts.append(f"embedding cosine mean {acc['embedding_cosine_mean']:.4f} min {acc['embedding_cosine_min']:.4f}")
    if "soundscape_agreement" in acc:
        parts.append(f"soundscape class agreement {acc['soundscape_agreement']:.1%}")
    if "landcover_pixel_agreement" in acc:
        parts.append(f"land-cover pixel agreement {acc['landcover_pixel_agreement']:.1%}")
    return " ".join(parts)
