"""Exported files in a bundle folder: their names, their provenance stamp and the manifests.

File names: ``{graph}.onnx`` (float32), ``{graph}.fp16.onnx``, ``{graph}.int8.onnx`` and
``{graph}.trt.ep`` (a torch-tensorrt engine), for the graphs of ``export.graphs``.

Every ONNX file carries ``metadata_props`` ``geoaudio.bundle_hash`` (the bundle's content hash,
``model.bundle.content_hash``), ``geoaudio.graph`` and ``geoaudio.precision``; a file whose hash is
not the bundle's current hash is *stale* (the weights changed after export) and is not used.
``onnx.json`` and ``trt.json`` list the files of each kind with their hashes and checks (these
names and the suffixes are constants of :mod:`model.bundle.files`).

Files are installed atomically: written under a hidden temporary name beside the target, then
renamed (:mod:`model.core.atomic` for one file; :func:`staging` here, a thin layer over it, for a
set that is installed together).

This module needs neither torch nor onnxruntime (the ONNX backend reads stamps through it).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from model.bundle.files import ONNX_SUFFIX, TRT_SUFFIX
from model.core.atomic import publish, temp_beside, write_text_atomic
from model.core.errors import GeoaudioError, one_line

HASH_KEY = "geoaudio.bundle_hash"
GRAPH_KEY = "geoaudio.graph"
PRECISION_KEY = "geoaudio.precision"
PRECISIONS = ("fp32", "fp16", "int8")


class ExportFileError(GeoaudioError, ValueError):
    """An exported file (an ONNX model) that cannot be read; the message names it."""


def onnx_name(graph: str, precision: str = "fp32") -> str:
    """``image_encoder.onnx``, ``image_encoder.fp16.onnx``, ``image_encoder.int8.onnx`` ..."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{graph}{ONNX_SUFFIX}" if precision == "fp32" else f"{graph}.{precision}{ONNX_SUFFIX}"


def trt_name(graph: str) -> str:
    """``image_encoder.trt.ep``: a torch-tensorrt compiled ExportedProgram."""
    return f"{graph}{TRT_SUFFIX}"


def onnx_stamp(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (weights are not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a broken file
        raise ExportFileError(f"{path}: not a readable ONNX file ({one_line(e)})") from None
    return {p.key: p.value for p in model.metadata_props}


def stamp_model(model, bundle_hash: str, graph: str, precision: str) -> None:
    """Write the provenance stamp into an ``onnx.ModelProto``'s ``metadata_props`` (in place)."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({HASH_KEY: bundle_hash, GRAPH_KEY: graph, PRECISION_KEY: precision})
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


class Staging:
    """Temporary files waiting to be renamed to their final names together (see :func:`staging`)."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Path, Path]] = []

    def add(self, tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
        """Stage the temporary file ``tmp`` to become ``final``; returns ``tmp`` as a Path."""
        self.pairs.append((Path(tmp), Path(final)))
        return Path(tmp)

    def temp(self, final: str | os.PathLike) -> Path:
        """A new empty temporary file beside ``final``, ending in its suffix
        (:func:`model.core.atomic.temp_beside`), staged to become it."""
        return self.add(temp_beside(final), final)


@contextmanager
def staging() -> Iterator[Staging]:
    """Stage files, then install all of them or none::

        with staging() as stage:
            tmp = stage.temp(folder / "model.onnx")  # or stage.add(tmp, final) for a file written earlier
            write(tmp); check(tmp)

    When the block ends normally, every staged file is renamed to its final name with
    :func:`model.core.atomic.publish`, in staging order. When it raises (any exception,
    KeyboardInterrupt included), every staged temporary file is deleted, nothing is renamed and the
    exception propagates. If a rename itself fails (an OSError), the files not yet renamed are
    deleted and the error propagates.
    """
    stage = Staging()
    try:
        yield stage
        for tmp, final in stage.pairs:
            publish(tmp, final)
    except BaseException:
        for tmp, _ in stage.pairs:
            tmp.unlink(missing_ok=True)  # already published ones are gone from here: a no-op
        raise


def read_manifest(folder: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """A manifest (``onnx.json`` / ``trt.json``) of a bundle folder, or None when absent or broken."""
    path = Path(folder) / name
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(folder: str | os.PathLike, name: str, manifest: dict[str, Any]) -> Path:
    """Write a manifest atomically."""
    return write_text_atomic(Path(folder) / name, json.dumps(manifest, indent=2) + "\n")


def merge_entries(old: dict[str, Any] | None, new_entries: list[dict[str, Any]], bundle_hash: str,
                  folder: str | os.PathLike) -> list[dict[str, Any]]:
    """This run's entries plus earlier ones for the same bundle hash whose files still exist and
    were not rewritten now (e.g. INT8 files kept by an export without ``--int8``)."""
    if not old or old.get("bundle_hash") != bundle_hash:
        return list(new_entries)
    written = {e["file"] for e in new_entries}
    kept = [e for e in old.get("files", []) if isinstance(e, dict) and e.get("file") not in written
            and (Path(folder) / str(e.get("file"))).is_file()]
    return kept + list(new_entries)
