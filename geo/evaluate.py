"""``python -m geo.evaluate MAP_DIR --truth SCENE_DIR``: score a mapped scene against its truth.

For a scene written by ``python -m model.synth scene`` (``landcover_truth.tif`` per pixel,
``soundscape_truth.tif`` per cell) and the products ``geo.map`` made of its ``scene.tif``:

- land cover: the truth is resampled onto ``landcover.tif``'s grid by the most frequent class
  under each product pixel (``Resampling.mode``); overall accuracy
  ``OA = #(pred == truth) / #valid`` and per-class ``IoU_k = TP_k / (TP_k + FP_k + FN_k)``,
  ``mIoU`` their mean over classes present in truth or prediction;
- soundscape: the truth's dominant sound class per cell is resampled (nearest) onto
  ``soundscape.tif``'s cell grid; agreement = share of cells where the predicted class equals it,
  next to the class-frequency baseline (always the most frequent true class).

Classes are matched by position, the order the heads trained on the synthetic world keep: for
land cover the world's classes (urban, agriculture, rangeland, forest, water, barren); for the
soundscape its sound classes (``model.data.sound_classes.SYNTHETIC_CLASSES``: traffic, human
activity, insects, birdsong, water, wind), whose names the truth raster carries in its
``sound_classes`` tag (read here, so this module stays free of the training stack). Product
rasters are at the model's resolution and read whole.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model.core.atomic import write_json_atomic
from model.core.cli import fail, run_cli

NODATA = 255


def _on_grid(truth_path: Path, product_path: Path, resampling) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, truth resampled onto the prediction's grid), both uint8, NODATA where unknown."""
    import rasterio
    from rasterio.warp import reproject

    with rasterio.open(product_path) as prod, rasterio.open(truth_path) as truth:
        pred = prod.read(1)
        resampled = np.full(pred.shape, NODATA, dtype=np.uint8)
        reproject(source=rasterio.band(truth, 1), destination=resampled, src_transform=truth.transform,
                  src_crs=truth.crs, dst_transform=prod.transform, dst_crs=prod.crs,
                  src_nodata=truth.nodata if truth.nodata is not None else NODATA, dst_nodata=NODATA,
                  resampling=resampling)
    return pred, resampled


def confusion(pred: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """Counts C[t, p] of truth class t predicted as p over pixels where both are known."""
    ok = (pred != NODATA) & (truth != NODATA) & (pred < classes) & (truth < classes)
    return np.bincount(truth[ok].astype(np.int64) * classes + pred[ok], minlength=classes * classes).reshape(classes, classes)


def landcover_scores(pred: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, Any]:
    """OA, per-class IoU and mIoU (classes present in truth or prediction) from two class rasters."""
    c = confusion(pred, truth, len(names))
    tp = np.diag(c).astype(np.float64)
    union = c.sum(0) + c.sum(1) - tp
    iou = {n: float(tp[k] / union[k]) for k, n in enumerate(names) if union[k] > 0}
    return {"pixels": int(c.sum()), "overall_accuracy": float(tp.sum() / max(1, c.sum())),
            "miou": float(np.mean(list(iou.values()))) if iou else 0.0, "iou": iou}


def soundscape_scores(pred: np.ndarray, truth: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Cell agreement of predicted and true sound classes, and the class-frequency baseline."""
    c = confusion(pred, truth, len(names))
    cells = int(c.sum())
    true_counts = c.sum(1)
    return {"cells": cells, "agreement": float(np.trace(c) / max(1, cells)),
            "baseline": float(true_counts.max() / max(1, cells)),
            "baseline_class": names[int(true_counts.argmax())],
            "true_counts": {n: int(true_counts[k]) for k, n in enumerate(names)}}


def sound_class_names(truth_path: Path, count: int) -> list[str]:
    """The sound-class names of a soundscape truth raster, in class-id order (its ``sound_classes``
    tag); a truth without the tag (an older scene) gets ``class 0`` ... ``class {count - 1}``."""
    import rasterio

    with rasterio.open(truth_path) as src:
        tagged = src.tags().get("sound_classes", "")
    return tagged.split(",") if tagged else [f"class {i}" for i in range(count)]


def evaluate_map(map_dir: str | Path, truth_dir: str | Path) -> dict[str, Any]:
    """Scores of the products in ``map_dir`` against the truth files in ``truth_dir``."""
    from rasterio.enums import Resampling

    from model.synth.world import CLASSES

    map_dir, truth_dir = Path(map_dir), Path(truth_dir)
    report: dict[str, Any] = {"map": str(map_dir), "truth": str(truth_dir)}
    pairs = (("landcover", "landcover.tif", "landcover_truth.tif", Resampling.mode, landcover_scores),
             ("soundscape", "soundscape.tif", "soundscape_truth.tif", Resampling.nearest, soundscape_scores))
    for name, product, truth, resampling, score in pairs:
        if not (map_dir / product).is_file():
            continue
        if not (truth_dir / truth).is_file():
            fail(f"{truth_dir / truth}: no such truth file (a folder written by python -m model.synth scene)")
        pred, true = _on_grid(truth_dir / truth, map_dir / product, resampling)
        names = list(CLASSES) if name == "landcover" else sound_class_names(truth_dir / truth, len(CLASSES))
        report[name] = score(pred, true, names)
    if len(report) == 2:
        fail(f"{map_dir}: no landcover.tif or soundscape.tif (a folder written by python -m geo.map)")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m geo.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("map_dir", help="OUT/<stem> folder written by python -m geo.map")
    p.add_argument("--truth", required=True, help="folder written by python -m model.synth scene")
    p.add_argument("--out", help="write the report as JSON here")
    args = p.parse_args(argv)
    report = evaluate_map(args.map_dir, args.truth)
    if "landcover" in report:
        lc = report["landcover"]
        print(f"land cover: OA {lc['overall_accuracy']:.3f}, mIoU {lc['miou']:.3f} over {lc['pixels']} pixels")
    if "soundscape" in report:
        sc = report["soundscape"]
        print(f"soundscape: agreement {sc['agreement']:.3f} over {sc['cells']} cells "
              f"(baseline '{sc['baseline_class']}' {sc['baseline']:.3f})")
    if args.out:
        write_json_atomic(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
