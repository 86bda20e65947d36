"""``python -m geo.query``: where on a mapped scene does it sound like this? A heatmap per tile cell.

The query vector ``v`` is an audio clip embedded by the bundle's audio encoder (``--audio``),
the soundscape prototype of a class (``--class``) or a description matched against the titles and
descriptions of the bundle's gallery (``--text``: the weighted mean of the stored audio embeddings
of the best-matching recordings, :mod:`geo.text_query`). It is compared with every cell's stored image
embedding ``z`` from ``embeddings.tif`` (written by ``python -m geo.map``); the image encoder is
not run again. The output ``heat.tif`` is a float32 cloud-optimised GeoTIFF on the same cell grid
with three bands (nodata NaN where the map has no data):

1. ``similarity``, 0..1: the rank-normalised closeness, ``1 - rank(d) / (n - 1)`` over the n cells
   with data (rank 0 = smallest distance, ties share their mean rank). 1 is the cell that sounds
   most like the query, 0.5 the median cell, 0 the least alike — read it as "this cell is more
   like the query than this share of the map". It is relative to the scene (a per-map ranking).
2. ``distance``: the bundle's embedding distance ``d(z, v)``, comparable across maps of the same
   bundle: ``euclidean`` ``||z - v||_2`` (embedding units), ``cosine`` ``1 - z.v / (||z|| ||v||)``
   (0 = same direction, 2 = opposite). Smaller is more similar.
3. ``probability``, 0..1: the probability that the cell and the query come from the same place,
   ``p(d) = 1 / (1 + exp(-(alpha + beta d)))``, at even prior odds, with the calibration fitted on
   validation pairs of the bundle's training data (:mod:`model.heads.query_calibration`, stored
   with its soundscape head). NaN everywhere when the bundle has no calibration. Unlike band 1 it
   can say that no cell of a map sounds like the query (:data:`LIKELY`).

Python API (for the app): :func:`query_embeddings`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from geo.cog import StagedRaster
from geo.errors import QueryError
from geo.text_query import DEFAULT_TOP_K, clean_text, text_query_vector
from model.bundle.audio import QUERY_MAX_SECONDS
from model.core.distance import DISTANCES, pairwise_distance
from model.core.errors import one_line

BANDS = ("similarity", "distance", "probability")
LIKELY = 0.5  # a cell "sounds like" the query when band 3 is at least this (same place more likely than not)


def query_calibration(bundle: Any) -> dict[str, Any] | None:
    """The bundle's query calibration (``alpha``, ``beta`` ...), or None when it has none."""
    return (bundle.heads.get("soundscape") or {}).get("query_calibration")


def calibrated_probability(d: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """float32 ``1 / (1 + exp(-(alpha + beta d)))`` (module doc, band 3); NaN without a calibration."""
    d = np.asarray(d, np.float64)
    if not calibration:
        return np.full(d.shape, np.nan, np.float32)
    logit = float(calibration["alpha"]) + float(calibration["beta"]) * d
    return (0.5 * (1.0 + np.tanh(0.5 * logit))).astype(np.float32)  # the logistic, without overflow


def cell_distances(embeddings: np.ndarray, vector: np.ndarray, distance: str) -> np.ndarray:
    """float32 distances (N,) between embeddings (N, D) and one vector (D,) (formulas in the module
    doc; computed by :func:`model.core.distance.pairwise_distance`)."""
    if distance not in DISTANCES:
        raise QueryError(f"distance must be one of {DISTANCES}, got {distance!r}")
    v = np.asarray(vector, np.float64).reshape(1, -1)
    return pairwise_distance(embeddings, v, distance)[:, 0].astype(np.float32)


def rank_similarity(d: np.ndarray) -> np.ndarray:
    """``1 - rank(d) / (n - 1)`` with mean ranks for ties; 1.0 when n == 1 (module doc, band 1)."""
    n = len(d)
    if n == 0:
        return np.zeros(0, np.float32)
    if n == 1:
        return np.ones(1, np.float32)
    order = np.argsort(d, kind="stable")
    sorted_d = d[order]
    starts = np.flatnonzero(np.r_[True, sorted_d[1:] != sorted_d[:-1]])
    ends = np.r_[starts[1:], n]
    mean_rank = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    ranks = np.empty(n, np.float64)
    ranks[order] = mean_rank
    return (1.0 - ranks / (n - 1)).astype(np.float32)


def _open(path: Path) -> Any:
    """rasterio dataset of an embeddings raster, or QueryError naming the file."""
    if not path.is_file():
        raise QueryError(f"{path}: no such file")
    try:
        return rasterio.open(path)
    except RasterioError as e:
        raise QueryError(f"{path}: not a readable embeddings raster ({one_line(e)})") from None


def _read_tags(path: Path) -> dict[str, str]:
    with _open(path) as ds:
        return ds.tags()


def _read_embeddings(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(D, rows, cols) float32 embeddings and the raster profile."""
    with _open(path) as ds:
        try:
            return ds.read(out_dtype="float32"), dict(ds.profile)
        except RasterioError as e:
            raise QueryError(f"{path}: cannot read the embeddings ({one_line(e)})") from None


def query_embeddings(embeddings_path: str | os.PathLike, vector: np.ndarray,
                     distance: str, calibration: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Heatmap of one query over an ``embeddings.tif``.

    Returns ``array`` float32 (3, rows, cols) — band 0 ``similarity`` (0..1, 1 = most alike),
    band 1 ``distance``, band 2 ``probability`` (NaN without ``calibration``; see the module doc),
    NaN where the map has no data — and a rasterio ``profile`` (GTiff, count 3, float32, nodata
    NaN, the embeddings' CRS and cell transform).
    """
    path = Path(embeddings_path)
    data, profile = _read_embeddings(path)
    v = np.asarray(vector, np.float32).reshape(-1)
    if data.shape[0] != v.size:
        raise QueryError(f"{path}: {data.shape[0]} embedding bands, but the query vector has {v.size} "
                         f"dimensions (was the map made with another bundle?)")
    if not np.all(np.isfinite(v)):
        raise QueryError("query vector has non-finite values")
    d_bands, rows, cols = data.shape
    z = data.reshape(d_bands, -1).T
    ok = np.all(np.isfinite(z), axis=1)
    out = np.full((len(BANDS), rows * cols), np.nan, np.float32)
    d = cell_distances(z[ok], v, distance)
    out[1, ok] = d
    out[0, ok] = rank_similarity(d)
    out[2, ok] = calibrated_probability(d, calibration)
    profile.update(driver="GTiff", count=len(BANDS), dtype="float32", nodata=math.nan)
    for key in ("blockxsize", "blockysize", "tiled", "interleave", "compress", "photometric"):
        profile.pop(key, None)
    return out.reshape(len(BANDS), rows, cols), profile


def write_heatmap(array: np.ndarray, profile: dict[str, Any], out: str | os.PathLike,
                  tags: dict[str, str] | None = None) -> Path:
    """Write a :func:`query_embeddings` result as a three-band float32 COG, atomically."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    staged = StagedRaster(out, width=profile["width"], height=profile["height"], count=len(BANDS), dtype="float32",
                          transform=profile["transform"], crs=profile.get("crs"), nodata=math.nan,
                          descriptions=list(BANDS), tags=tags)
    try:
        staged.write(array, 0, 0)
        return staged.to_cog("average")
    except BaseException:
        staged.discard()
        raise


def class_vector(bundle: Any, name: str) -> np.ndarray:
    """The soundscape prototype (D,) of the class called ``name``; QueryError lists the known ones."""
    head = bundle.heads.get("soundscape")
    if head is None:
        raise QueryError(f"{bundle.path}: bundle has no soundscape head, so --class cannot be used (try --audio)")
    names = [c["name"] for c in head["classes"]]
    if name not in names:
        raise QueryError(f"unknown sound class {name!r}; the bundle's classes are: {', '.join(names)}")
    return np.asarray(bundle.tensors["soundscape.prototypes"][names.index(name)], np.float32)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m geo.query``."""
    p = argparse.ArgumentParser(
        prog="python -m geo.query",
        description="Similarity heatmap of a sound over a mapped scene, from the embeddings.tif written by "
                    "python -m geo.map (the image encoder is not run again). heat.tif band 1 'similarity' is "
                    "0..1 (1 = the cell most like the sound, 0.5 = the median cell; a ranking within this "
                    "map); band 2 'distance' is the bundle's embedding distance (smaller = more alike).")
    p.add_argument("embeddings", metavar="EMBEDDINGS.tif", help="embeddings.tif from python -m geo.map")
    p.add_argument("--bundle", required=True, help="the model bundle the map was made with")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--audio", metavar="CLIP", help="audio clip (wav, mp3, ogg, flac ...) to search for")
    what.add_argument("--class", dest="sound_class", metavar="NAME",
                      help="a soundscape class of the bundle (its prototype is the query)")
    what.add_argument("--text", metavar="WORDS",
                      help="a description (\"church bells and traffic\") matched against the titles and "
                           "descriptions of the bundle's gallery; the query is the score-weighted mean of the "
                           "best-matching recordings' stored audio embeddings")
    p.add_argument("--out", required=True, metavar="HEAT.tif", help="output heatmap (float32 COG)")
    p.add_argument("--backend", default="auto", help="backend that embeds --audio (default: auto)")
    p.add_argument("--max-audio-seconds", type=_positive_seconds, default=QUERY_MAX_SECONDS, metavar="S",
                   help=f"refuse an --audio clip longer than this, read from its header before decoding "
                        f"(default {QUERY_MAX_SECONDS:g} s, 10 minutes)")
    p.add_argument("--text-top", type=_positive_int, default=DEFAULT_TOP_K, metavar="K",
                   help=f"a --text query uses at most the K best-matching gallery recordings "
                        f"(default {DEFAULT_TOP_K})")
    return p


def _positive_int(text: str) -> int:
    """An integer >= 1 (argparse type of ``--text-top``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def text_query(bundle: Any, text: str, top_k: int) -> tuple[np.ndarray, str]:
    """The query vector of a description over the bundle's gallery (:mod:`geo.text_query`) and what
    was asked (``text "..."``); prints the recordings used (key, score, title). QueryError when the
    bundle has no gallery or no recording matches."""
    from model.bundle.gallery import gallery_path, load_gallery

    if not gallery_path(bundle).is_file():
        raise QueryError(f"{bundle.path}: bundle has no gallery, so --text cannot be used "
                         f"(build one with python -m model.gallery, or try --audio or --class)")
    rows, embeddings = load_gallery(bundle)
    vector, used = text_query_vector(rows, embeddings, text, top_k)
    print(f"text query \"{clean_text(text)}\": {len(used)} gallery recordings")
    for match in used:
        print(f"  key {match.key}  score {match.score:.3f}  weight {match.weight:.3f}  {match.title}")
    return vector, f"text \"{clean_text(text)}\""


def _positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (argparse type of ``--max-audio-seconds``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m geo.query``."""
    from model.bundle import load

    args = build_parser().parse_args(argv)
    bundle = load(args.bundle)
    bundle_hash = bundle.content_hash()
    made_with = _read_tags(Path(args.embeddings)).get("geoaudio_bundle_hash")
    if made_with and made_with != bundle_hash:
        raise QueryError(f"{args.embeddings}: made with bundle {made_with}, not {args.bundle} ({bundle_hash}); "
                         f"embeddings of different models cannot be compared")
    if args.sound_class is not None:
        vector, what = class_vector(bundle, args.sound_class), f"class {args.sound_class}"
    elif args.text is not None:
        vector, what = text_query(bundle, args.text, args.text_top)
    else:
        from export.runtime import open_backend

        backend = open_backend(bundle, name=args.backend)
        vector, what = backend.embed_audio_file(args.audio, args.max_audio_seconds), f"audio {args.audio}"
    array, profile = query_embeddings(args.embeddings, vector, bundle.distance, query_calibration(bundle))
    out = write_heatmap(array, profile, args.out, {"geoaudio_query": what, "geoaudio_distance": bundle.distance,
                                                    "geoaudio_bundle_hash": bundle_hash})
    best = np.unravel_index(np.nanargmax(array[0]), array[0].shape) if np.isfinite(array[0]).any() else None
    print(f"wrote {out} ({what}; most similar cell row {best[0]}, col {best[1]})" if best else f"wrote {out}")
    print(answer(array[2]))
    return 0


def answer(probability: np.ndarray, likely: float = LIKELY) -> str:
    """One line on band 3: how many cells are at least ``likely`` to share the query's place, or
    that none is (or that the bundle has no calibration)."""
    p = probability[np.isfinite(probability)]
    if p.size == 0:
        return "no calibrated probability: the bundle has no query calibration (python -m model.soundscape fits one)"
    n = int((p >= likely).sum())
    if n == 0:
        return f"no place in this map sounds like this: the highest probability of the same place is {p.max():.2f} (< {likely:g})"
    return f"{n} of {p.size} cells ({100 * n / p.size:.1f} %) are more likely than not from the same place (p >= {likely:g}); highest {p.max():.2f}"


if __name__ == "__main__":
    from model.core.cli import run_cli

    sys.exit(run_cli(main))
