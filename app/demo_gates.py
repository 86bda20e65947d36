"""The demo's quality gates: what a demo build must reach before it declares success.

A short pretraining can collapse (every recording gets nearly the same embedding) or stop early,
and the maps it gives then look plausible while saying nothing. :func:`check_gates` measures four
figures of a finished demo bundle and compares each with its threshold (:class:`Thresholds`):

=============  ===================================================================================
gate           figure
=============  ===================================================================================
gallery        mean pairwise cosine similarity of the gallery's audio embeddings
               (:func:`model.bundle.gallery.mean_pairwise_cosine`); must stay *below* the threshold
retrieval      image -> audio Recall@k over the held-out pairs (``val`` and ``test`` splits, n of
               them), as a multiple of chance, ``k / n``; must reach the threshold
soundscape     test accuracy of the soundscape head minus its class-frequency baseline (always the
               most frequent training class; both from the head's fit report), in percentage
               points / 100; must reach the threshold
landcover      overall accuracy of the land-cover head on its held-out tiles (from the fine-tuning
               run's test, recorded in the head); must reach the threshold
=============  ===================================================================================

:func:`first_failure` gives the one line of the first gate that failed (None when all passed);
:func:`gates_record` is what DONE.json records. Gates whose head is missing are skipped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle.gallery import load_gallery, mean_pairwise_cosine

HELD_OUT = ("val", "test")


@dataclass(frozen=True)
class Thresholds:
    """Gate thresholds (fractions; module doc for each figure)."""

    max_gallery_cosine: float
    recall_k: int
    min_recall_over_chance: float
    min_soundscape_margin: float
    min_landcover_accuracy: float


@dataclass(frozen=True)
class GateResult:
    """One gate: its name, the measured figure, the threshold, whether it passed, and a one-line
    description of the comparison."""

    name: str
    figure: float | None
    threshold: float
    passed: bool
    text: str


def gallery_gate(bundle, t: Thresholds) -> GateResult:
    """Mean pairwise cosine similarity of the gallery's embeddings < ``t.max_gallery_cosine``."""
    _, embeddings = load_gallery(bundle)
    spread = mean_pairwise_cosine(embeddings)
    ok = bool(spread < t.max_gallery_cosine)
    return GateResult("gallery", spread, t.max_gallery_cosine, ok,
                      f"mean pairwise cosine similarity of the {len(embeddings)} gallery embeddings is {spread:.4f} "
                      f"({'below' if ok else 'not below'} {t.max_gallery_cosine:g}; 1 = collapsed)")


def held_out_recall(bundle, pairs: Path, k: int, crop: float, audio_source: str) -> tuple[float, int]:
    """(image -> audio Recall@k, n) over the held-out pairs of ``pairs`` (:data:`HELD_OUT` splits),
    recordings read from ``audio_source`` ("spectrogram" JPEGs or "audio" files)."""
    from model.core.distance import pairwise_distance
    from model.evaluation.embed import embed_folder
    from model.evaluation.retrieval import retrieval_metrics

    parts = [embed_folder(bundle, pairs, split=split, audio_source=audio_source, crop=crop, progress=False)
             for split in HELD_OUT]
    image = np.concatenate([p.image for p in parts])
    audio = np.concatenate([p.audio for p in parts])
    metrics = retrieval_metrics(pairwise_distance(image, audio, bundle.distance), ks=(k,))
    return metrics[f"recall@{k}"], len(image)


def retrieval_gate(bundle, pairs: Path, crop: float, t: Thresholds, audio_source: str) -> GateResult:
    """Held-out image -> audio Recall@k >= ``t.min_recall_over_chance`` x chance (k / n)."""
    recall, n = held_out_recall(bundle, pairs, t.recall_k, crop, audio_source)
    chance = min(t.recall_k, n) / max(n, 1)
    ratio = recall / chance
    ok = bool(ratio >= t.min_recall_over_chance)
    return GateResult("retrieval", ratio, t.min_recall_over_chance, ok,
                      f"image -> audio Recall@{t.recall_k} on {n} held-out pairs is {recall:.3f}, {ratio:.2f} x chance "
                      f"({chance:.3f}; needs {t.min_recall_over_chance:g} x)")


def soundscape_gate(bundle, t: Thresholds) -> GateResult | None:
    """Soundscape test accuracy - class-frequency baseline >= ``t.min_soundscape_margin``."""
    report = bundle.heads.get("soundscape", {}).get("report", {})
    accuracy, baseline = report.get("accuracy", {}).get("test"), report.get("baseline", {}).get("test")
    if accuracy is None or baseline is None:
        return None
    margin = accuracy - baseline
    ok = bool(margin >= t.min_soundscape_margin)
    return GateResult("soundscape", margin, t.min_soundscape_margin, ok,
                      f"soundscape test accuracy {100 * accuracy:.1f} % vs {100 * baseline:.1f} % for the class-frequency "
                      f"baseline ({100 * margin:+.1f} points; needs {100 * t.min_soundscape_margin:+.1f})")


def landcover_gate(bundle, t: Thresholds) -> GateResult | None:
    """Land-cover overall accuracy on held-out tiles >= ``t.min_landcover_accuracy``."""
    accuracy = bundle.heads.get("landcover", {}).get("metrics", {}).get("overall_accuracy")
    if accuracy is None:
        return None
    ok = bool(accuracy >= t.min_landcover_accuracy)
    return GateResult("landcover", accuracy, t.min_landcover_accuracy, ok,
                      f"land-cover overall accuracy on held-out tiles is {100 * accuracy:.1f} % "
                      f"(needs {100 * t.min_landcover_accuracy:.1f} %)")


def check_gates(bundle_path: Path, pairs: Path, crop: float, t: Thresholds,
                audio_source: str = "spectrogram") -> list[GateResult]:
    """Every gate of the demo bundle at ``bundle_path`` (module doc); gates without a head are left out."""
    from model.bundle import load

    bundle = load(bundle_path)
    results = [gallery_gate(bundle, t), retrieval_gate(bundle, pairs, crop, t, audio_source),
               soundscape_gate(bundle, t), landcover_gate(bundle, t)]
    return [r for r in results if r is not None]


def first_failure(results: list[GateResult]) -> str | None:
    """``quality gate NAME failed: TEXT`` for the first failed gate; None when all passed."""
    failed = [r for r in results if not r.passed]
    return f"quality gate {failed[0].name} failed: {failed[0].text}" if failed else None


def gates_record(results: list[GateResult], t: Thresholds) -> dict[str, Any]:
    """What DONE.json records: the thresholds and each gate's figure, threshold and verdict."""
    return {"thresholds": asdict(t),
            "results": {r.name: {"figure": r.figure, "threshold": r.threshold, "passed": r.passed, "text": r.text}
                        for r in results}}
