"""Parity checks: does an exported graph compute what the PyTorch model computes, on real inputs?

For each output of a graph, over N real inputs (tiles cut from GeoTIFFs, log-mel chunks of field
recordings), with reference ``a`` (PyTorch) and candidate ``b`` (ONNX Runtime, TensorRT):

- ``max_abs_err = max |a - b|`` and ``scale = max |a|``; the relative error is their ratio;
- ``cos_n = a_n . b_n / (||a_n|| ||b_n||)`` per sample (flattened), reported as mean and minimum.

A graph passes when ``max_abs_err <= max_rel_err * scale`` and ``min cos_n >= min_cos``
(:data:`FP32`: 1e-3 and 0.9999; :data:`FP16`: 1e-2 and 0.999). Quantised (INT8) graphs are not
held to a tolerance; they are described by :func:`mean_cosine` and :func:`class_agreement`.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model.core.errors import GeoaudioError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_TILE_SOURCES = (SHARED_DATA / "geotiff" / "RGB.byte.tif",)
DEFAULT_AUDIO_SOURCES = (SHARED_DATA / "audio" / "robin.ogg", SHARED_DATA / "audio" / "humpback.ogg")
PARITY_TILES_PER_SOURCE = 16
PARITY_AUDIO_CHUNKS = 16
COS_EPS = 1e-12


class ParityError(GeoaudioError, ValueError):
    """An exported graph whose outputs differ from PyTorch's beyond the tolerance."""


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed ``max_abs_err / scale`` and smallest allowed per-sample cosine."""

    max_rel_err: float
    min_cos: float


FP32 = Tolerance(max_rel_err=1e-3, min_cos=0.9999)
FP16 = Tolerance(max_rel_err=1e-2, min_cos=0.999)


@dataclass(frozen=True)
class ParityStats:
    """How far one output of one graph is from the reference (definitions in the module doc)."""

    graph: str
    output: str
    n: int
    max_abs_err: float
    scale: float
    mean_cos: float
    min_cos: float

    @property
    def rel_err(self) -> float:
        return self.max_abs_err / self.scale if self.scale > 0 else self.max_abs_err

    def within(self, tol: Tolerance) -> bool:
        return self.rel_err <= tol.max_rel_err and self.min_cos >= tol.min_cos

    def line(self) -> str:
        return (f"{self.graph}/{self.output}: n={self.n} max abs err {self.max_abs_err:.3g} "
                f"(scale {self.scale:.3g}, relative {self.rel_err:.2e}), cosine mean {self.mean_cos:.6f} "
                f"min {self.min_cos:.6f}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rel_err": self.rel_err}


def per_sample_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos_n = a_n . b_n / (||a_n|| ||b_n||) with each sample flattened: (N, ...) -> (N,)."""
    a2 = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b2 = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    den = np.maximum(np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1), COS_EPS)
    return (a2 * b2).sum(axis=1) / den


def compare(graph: str, output: str, reference: np.ndarray, candidate: np.ndarray) -> ParityStats:
    """Statistics of ``candidate`` against ``reference`` (same shape, first axis = samples)."""
    if reference.shape != candidate.shape:
        raise ParityError(f"{graph}/{output}: output shape {candidate.shape} differs from PyTorch's {reference.shape}")
    cos = per_sample_cosine(reference, candidate)
    return ParityStats(graph=graph, output=output, n=len(reference),
                       max_abs_err=float(np.max(np.abs(reference.astype(np.float64) - candidate))),
                       scale=float(np.max(np.abs(reference))), mean_cos=float(cos.mean()), min_cos=float(cos.min()))


def compare_outputs(graph: str, names: Sequence[str], reference: Sequence[np.ndarray],
                    candidate: Sequence[np.ndarray]) -> list[ParityStats]:
    """:func:`compare` for every named output of a graph."""
    return [compare(graph, n, r, c) for n, r, c in zip(names, reference, candidate)]


def check(stats: Sequence[ParityStats], tol: Tolerance, what: str = "") -> None:
    """Raise ParityError naming the first output outside ``tol``."""
    for s in stats:
        if not s.within(tol):
            raise ParityError(f"{what}{s.graph}/{s.output} differs from PyTorch: relative max error "
                              f"{s.rel_err:.2e} (allowed {tol.max_rel_err:g}), min cosine {s.min_cos:.6f} "
                              f"(allowed {tol.min_cos:g})")


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of the per-sample cosine similarity."""
    return float(per_sample_cosine(a, b).mean())


def class_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of positions where the arg-max class (axis 1) is the same: scores (N, K) or
    probabilities (N, K, H, W, pixel agreement)."""
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def audio_chunks(paths: Sequence[str | Path], config, limit: int | None = None) -> np.ndarray:
    """Log-mel chunks (M, 1, n_mels, chunk_frames) of real recordings, concatenated (at most ``limit``)."""
    from model.bundle.audio import load_logmel, to_chunks

    parts = []
    for p in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # short clips are padded; that is fine here
            parts.append(to_chunks(load_logmel(p, config), config, source=str(p)))
    if not parts:
        raise ParityError("no audio files for the audio encoder's parity check (pass --parity-audio)")
    chunks = np.concatenate(parts)
    return chunks[:limit] if limit else chunks


def existing(paths: Sequence[Path]) -> list[Path]:
    """The paths that exist (the shared test data is absent outside a development checkout)."""
    return [p for p in paths if Path(p).exists()]


def run_torch(module, x: np.ndarray, batch_size: int = 16) -> list[np.ndarray]:
    """Run a torch module over float32 inputs in batches; returns each output concatenated."""
    import torch

    parts: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out = module(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))
            outs = out if isinstance(out, tuple) else (out,)
            if not parts:
                parts = [[] for _ in outs]
            for store, o in zip(parts, outs):
                store.append(o.float().numpy())
    return [np.concatenate(p) for p in parts]


class ParityInputs:
    """Real parity inputs of a bundle, loaded once per tile size: normalised tiles and audio chunks."""

    def __init__(self, bundle, tile_sources: Sequence[Path], audio_sources: Sequence[Path]) -> None:
        self.bundle, self.tile_sources, self.audio_sources = bundle, list(tile_sources), list(audio_sources)
        self._cache: dict[Any, np.ndarray] = {}

    def for_graph(self, graph: str) -> np.ndarray:
        """Float32 inputs of ``graph``: normalised tiles at its tile size, or log-mel chunks."""
        from export.calibration import load_many
        from export.graphs import graph_spec

        shape = graph_spec(self.bundle, graph).input_shape
        if graph == "audio_encoder":
            if "audio" not in self._cache:
                self._cache["audio"] = audio_chunks(self.audio_sources, self.bundle.audio_config, PARITY_AUDIO_CHUNKS)
            return self._cache["audio"]
        size = shape[-1]
        if size not in self._cache:
            if not self.tile_sources:
                raise ParityError("no real tiles for the parity check: pass --parity-tiles (a GeoTIFF or image folder)")
            tiles = load_many(self.tile_sources, size, limit_each=PARITY_TILES_PER_SOURCE)
            self._cache[size] = self.bundle.image_input.normalise(tiles)
        return self._cache[size]
