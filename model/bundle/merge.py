"""Merge the heads of two bundles that share an image encoder: ``python -m model.bundle merge A B --out C``.

Heads are trained on top of a frozen image encoder (land cover) or in its embedding space
(soundscape prototypes, gallery), so two bundles can be combined only when they embed images
identically. Rules:

- ``image_encoder.*`` tensors must be exactly equal (names, shapes, dtypes, values), and so must
  the encoder spec, the image input (tile size, ground sample distance, bands, normalisation),
  the embedding size and the distance; otherwise the merge is refused.
- The audio encoder (tensors and audio front-end) must be equal when both have one; when only
  one has it, C takes it.
- Heads are united. A head present in both (e.g. two soundscape heads) is refused unless
  ``--prefer A|B`` says whose copy to keep; the same holds for ``gallery.parquet``.
- Any other tensors (not of an encoder or a head) must be equal when both bundles hold them.
- C's provenance lists both sources (path, content hash, provenance). Exported graphs (``*.onnx``)
  are not carried over: they name the hash of the bundle they came from.

A refusal is a one-line :class:`MergeError` and nothing is written. C is assembled in a temporary
sibling folder and renamed into place.
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle.files import GALLERY_FILE
from model.core.atomic import staging_dir
from model.core.cli import run_cli
from model.core.errors import GeoaudioError

IMAGE, AUDIO = "image_encoder", "audio_encoder"
SHARED_FIELDS = ("embedding_dim", "distance", "image_encoder", "image_input")


class MergeError(GeoaudioError, ValueError):
    """Two bundles that cannot be merged; the message says why."""


def _part_tensors(bundle, part: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in bundle.tensors.items() if k.split(".", 1)[0] == part}


def tensors_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Same names, and per name the same dtype, shape and values (exact)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


def check_compatible(a, b) -> None:
    """MergeError unless A and B share the image encoder (and the audio encoder when both have one)."""
    for field in SHARED_FIELDS:
        if a.meta.get(field) != b.meta.get(field):
            raise MergeError(f"cannot merge {a.path} and {b.path}: their {field.replace('_', ' ')} differs")
    if not tensors_equal(_part_tensors(a, IMAGE), _part_tensors(b, IMAGE)):
        raise MergeError(f"cannot merge {a.path} and {b.path}: their image encoder weights differ")
    if a.has(AUDIO) and b.has(AUDIO):
        if a.meta[AUDIO] != b.meta[AUDIO] or a.meta.get("audio") != b.meta.get("audio") \
                or not tensors_equal(_part_tensors(a, AUDIO), _part_tensors(b, AUDIO)):
            raise MergeError(f"cannot merge {a.path} and {b.path}: their audio encoders differ")


def _pick(name: str, a, b, in_a: bool, in_b: bool, prefer: str | None):
    """The bundle whose copy of ``name`` C gets (None when neither has it)."""
    if in_a and in_b:
        if prefer is None:
            raise MergeError(f"both {a.path} and {b.path} have a {name}; pass --prefer A or --prefer B")
        return a if prefer == "A" else b
    return a if in_a else b if in_b else None


def merged_parts(a, b, prefer: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray], Any]:
    """C's bundle.json, tensors and the bundle whose gallery it gets (or None). Raises MergeError."""
    check_compatible(a, b)
    meta = copy.deepcopy(a.meta)
    tensors = dict(_part_tensors(a, IMAGE))
    audio_from = _pick("audio encoder", a, b, a.has(AUDIO), b.has(AUDIO), "A")  # equal if both: A's
    if audio_from is not None:
        meta[AUDIO], meta["audio"] = copy.deepcopy(audio_from.meta[AUDIO]), copy.deepcopy(audio_from.meta["audio"])
        tensors.update(_part_tensors(audio_from, AUDIO))
    meta["heads"] = {}
    for head in sorted(set(a.heads) | set(b.heads)):
        source = _pick(f"{head!r} head", a, b, head in a.heads, head in b.heads, prefer)
        meta["heads"][head] = copy.deepcopy(source.heads[head])
        tensors.update(_part_tensors(source, head))
    _add_other_tensors(a, b, tensors, set(meta["heads"]))
    gallery = _pick("gallery", a, b, _has_gallery(a), _has_gallery(b), prefer)
    meta["provenance"] = {"merged_from": [_source(x) for x in (a, b)], "prefer": prefer}
    return meta, tensors, gallery


def _add_other_tensors(a, b, tensors: dict[str, np.ndarray], heads: set[str]) -> None:
    known = {IMAGE, AUDIO} | heads
    for bundle, other in ((a, b), (b, a)):
        for name, value in bundle.tensors.items():
            if name.split(".", 1)[0] in known:
                continue
            mine = other.tensors.get(name)
            if mine is not None and not tensors_equal({name: value}, {name: mine}):
                raise MergeError(f"cannot merge {a.path} and {b.path}: tensor {name} differs")
            tensors[name] = value


def _has_gallery(bundle) -> bool:
    return (Path(bundle.path) / GALLERY_FILE).is_file()


def _source(bundle) -> dict[str, Any]:
    return {"path": str(bundle.path), "content_hash": bundle.content_hash(),
            "provenance": bundle.meta.get("provenance", {})}


def merge(a_path: str | os.PathLike, b_path: str | os.PathLike, out: str | os.PathLike,
          prefer: str | None = None, overwrite: bool = False):
    """Merge bundles A and B into a new bundle folder ``out``; returns it loaded (module doc)."""
    from model.bundle import load, save

    out = Path(out)
    if prefer not in (None, "A", "B"):
        raise MergeError(f"--prefer must be A or B, got {prefer!r}")
    a, b = load(a_path), load(b_path)
    if out.exists() and not overwrite:
        raise MergeError(f"{out}: already exists (pass --overwrite to replace it)")
    if out.resolve() in (Path(a.path).resolve(), Path(b.path).resolve()):
        raise MergeError(f"{out}: the output must be a new folder, not one of the inputs")
    meta, tensors, gallery = merged_parts(a, b, prefer)
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(out) as folder:  # replaces an existing ``out`` only once C is whole
        save(folder, meta, tensors, overwrite=True)  # the staging folder exists (empty): fill it, check it loads
        if gallery is not None:
            shutil.copy2(Path(gallery.path) / GALLERY_FILE, folder / GALLERY_FILE)
    return load(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.bundle", description="Work with model bundles.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    m = sub.add_parser(
        "merge", help="combine the heads of two bundles that share an image encoder",
        description="Combine the heads (land cover, soundscape ...) and gallery of bundles A and B, which must "
                    "have exactly the same image encoder weights (and the same audio encoder if both have "
                    "one), into a new bundle C. A head both have is refused unless --prefer says whose to keep.")
    m.add_argument("a", type=Path, metavar="A", help="first bundle folder")
    m.add_argument("b", type=Path, metavar="B", help="second bundle folder")
    m.add_argument("--out", required=True, type=Path, help="the merged bundle folder to create")
    m.add_argument("--prefer", choices=("A", "B"), default=None,
                   help="whose copy to keep of a head (or gallery) both bundles have")
    m.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m model.bundle`` (subcommand ``merge``)."""
    args = parse_args(argv)
    merged = merge(args.a, args.b, args.out, args.prefer, args.overwrite)
    heads = ", ".join(sorted(merged.heads)) or "none"
    gallery = " and a gallery" if _has_gallery(merged) else ""
    print(f"wrote {merged.path}: heads {heads}{gallery} (content hash {merged.content_hash()})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
