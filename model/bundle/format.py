"""The model bundle: one folder that holds everything needed to use a trained model.

Layout (see docs/bundle.md):
- ``bundle.json``: format and version, encoder specs, embedding size, distance, image input,
  audio front-end, heads (class names and colours ...), provenance;
- ``weights.safetensors``: every tensor, named by part (``image_encoder.``, ``audio_encoder.``,
  ``soundscape.``, ``landcover.``);
- optional files beside them (``gallery.parquet``, ``*.onnx`` ...); every name is a constant
  of :mod:`model.bundle.files`.

Every consumer loads a bundle with :func:`load`, which validates it and raises
:class:`BundleError` with one line naming the folder and the problem. Nothing needs pickle, and
loading and validation need no PyTorch, so an edge machine with ONNX Runtime alone can use a
bundle exported to ONNX. The encoders as torch modules are built in ``model.nn.encoders``.
Python API::

    b = load("runs/demo/bundle"); enc = image_encoder_from_bundle(b); z = enc(x)  # model.nn.encoders
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from model.bundle.audio import AudioConfig
from model.bundle.encoder_spec import EncoderSpec, EncoderSpecError, infer_spec
from model.bundle.files import META_FILE, REQUIRED_FILES, WEIGHTS_FILE
from model.bundle.image_input import ImageInput
from model.bundle.tensor_file import TensorFile, shapes_of
from model.bundle.validation import check_meta
from model.core.atomic import staging_dir, write_atomic, write_text_atomic
from model.core.distance import DISTANCES
from model.core.errors import GeoaudioError, one_line

FORMAT = "geoaudio-bundle"
FORMAT_VERSION = 1
ENCODER_PARTS = ("image_encoder", "audio_encoder")
REQUIRED_KEYS = ("format", "format_version", "embedding_dim", "distance", "image_encoder",
                 "image_input", "heads", "provenance")


class BundleError(GeoaudioError, ValueError):
    """A folder that is not a usable bundle; the message names it and says what is wrong."""


@dataclass
class Bundle:
    """A loaded bundle: its folder, its metadata and its tensors (NumPy arrays by name, each read
    from weights.safetensors on first use: :class:`model.bundle.tensor_file.TensorFile`)."""

    path: Path
    meta: dict[str, Any]
    tensors: Mapping[str, np.ndarray] = field(repr=False)
    _content_hash: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def embedding_dim(self) -> int:
        return int(self.meta["embedding_dim"])

    @property
    def distance(self) -> str:
        """"euclidean" (compare raw embeddings by L2 distance) or "cosine" (L2-normalised)."""
        return str(self.meta["distance"])

    @property
    def image_input(self) -> ImageInput:
        return ImageInput.from_dict(self.meta["image_input"])

    @property
    def audio_config(self) -> AudioConfig:
        return AudioConfig.from_dict(self.meta["audio"])

    @property
    def heads(self) -> dict[str, Any]:
        return self.meta.get("heads", {})

    def has(self, part: str) -> bool:
        """Whether the bundle holds an encoder or head named ``part``."""
        return (part in ENCODER_PARTS and part in self.meta) or part in self.heads

    def part_tensors(self, part: str) -> dict[str, np.ndarray]:
        """Tensors of one part with the ``part.`` prefix removed."""
        prefix = f"{part}."
        return {k[len(prefix):]: self.tensors[k] for k in self.tensors if k.startswith(prefix)}  # reads only these

    def encoder_spec(self, part: str) -> EncoderSpec:
        """The :class:`~model.bundle.encoder_spec.EncoderSpec` of ``image_encoder`` or ``audio_encoder``."""
        if part not in self.meta:
            raise BundleError(f"{self.path}: bundle has no {part}")
        return EncoderSpec.from_dict(self.meta[part])

    def content_hash(self) -> str:
        """sha256 (hex, first 16 digits) of bundle.json and weights.safetensors as stored.

        Computed on the first call and kept on this object: a loaded bundle's files are taken to be
        immutable (exports, runs and the app stamp their outputs with this hash). Code that
        rewrites them (:func:`save` with ``overwrite``) gets a freshly loaded Bundle back; an
        older Bundle object of the same folder is stale and must not be used again.
        """
        if self._content_hash is None:
            self._content_hash = content_hash(self.path)
        return self._content_hash


def content_hash(path: str | os.PathLike) -> str:
    """sha256 (hex, first 16 digits) of a bundle's bundle.json and weights.safetensors."""
    h = hashlib.sha256()
    for name in REQUIRED_FILES:
        with open(Path(path) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle folder")
    if not meta_path.is_file():
        raise BundleError(f"{path}: not a bundle ({META_FILE} missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{meta_path}: invalid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BundleError(f"{meta_path}: not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{meta_path}: format version {meta.get('format_version')} is not supported "
                          f"(this geoaudio reads version {FORMAT_VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{meta_path}: missing fields {missing}")
    if meta["distance"] not in DISTANCES:
        raise BundleError(f"{meta_path}: distance must be one of {DISTANCES}, got {meta['distance']!r}")
    return meta


def _read_tensors(path: Path) -> TensorFile:
    """The weights file opened and its header checked; tensors are read when first used."""
    from safetensors import SafetensorError

    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{path}: {WEIGHTS_FILE} missing")
    try:
        return TensorFile(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{weights}: unreadable safetensors file ({e})") from None


def _check_encoder(path: Path, meta: dict[str, Any], tensors: Mapping[str, np.ndarray], part: str) -> None:
    try:
        declared = EncoderSpec.from_dict(meta[part])
    except (TypeError, ValueError, KeyError) as e:
        raise BundleError(f"{path}: {part} spec in {META_FILE} is invalid ({e})") from None
    prefix = f"{part}."
    own = {k[len(prefix):]: v for k, v in shapes_of(tensors).items() if k.startswith(prefix)}
    if not own:
        raise BundleError(f"{path}: {WEIGHTS_FILE} has no {part} tensors")
    try:
        found = infer_spec(own)
    except EncoderSpecError as e:
        raise BundleError(f"{path}: {part} tensors are inconsistent ({e})") from None
    mismatch = [k for k in ("block", "layers", "stem_width", "widths", "in_channels", "embed_dim")
                if getattr(found, k) != getattr(declared, k)]
    if mismatch:
        raise BundleError(f"{path}: {part} tensors do not match {META_FILE} in {', '.join(mismatch)}")
    if declared.embed_dim != int(meta["embedding_dim"]):
        raise BundleError(f"{path}: {part} embeds to {declared.embed_dim} dimensions, "
                          f"bundle says {meta['embedding_dim']}")


def _check_heads(path: Path, meta: dict[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
    for name, head in meta["heads"].items():
        if not isinstance(head, dict) or not head.get("classes"):
            raise BundleError(f"{path}: head {name!r} has no class list")
        if not any(k.startswith(f"{name}.") for k in tensors):
            raise BundleError(f"{path}: head {name!r} has no tensors in {WEIGHTS_FILE}")
    sound = meta["heads"].get("soundscape")
    if sound is not None:
        protos = tensors.get("soundscape.prototypes")
        if protos is None or protos.shape != (len(sound["classes"]), int(meta["embedding_dim"])):
            raise BundleError(f"{path}: soundscape.prototypes must be (classes, embedding_dim)")


def _check_values(path: Path, meta: dict[str, Any]) -> None:
    """Every number and structure of bundle.json in its range (:mod:`model.bundle.validation`),
    the image encoder taking one channel per band and the audio encoder one (the log-mel)."""
    try:
        check_meta(meta)
        image = ImageInput.from_dict(meta["image_input"])
        if "audio" in meta:
            AudioConfig.from_dict(meta["audio"])
    except (GeoaudioError, TypeError) as e:
        raise BundleError(f"{path}: {META_FILE}: {one_line(e)}") from None
    for part, channels in (("image_encoder", len(image.bands)), ("audio_encoder", 1)):
        found = meta[part].get("in_channels", channels) if part in meta else channels
        if found != channels:
            raise BundleError(f"{path}: {META_FILE}: {part}.in_channels is {found!r}; allowed: {channels} "
                              f"({'one per image_input band' if part == 'image_encoder' else 'the log-mel'})")


def load(path: str | os.PathLike) -> Bundle:
    """Load and validate a bundle folder; :class:`BundleError` says what is wrong in one line."""
    path = Path(path)
    meta = _read_meta(path)
    _check_values(path, meta)  # before the weights are read: nothing is allocated for a bad bundle.json
    tensors = _read_tensors(path)
    for part in ENCODER_PARTS:
        if part in meta:
            _check_encoder(path, meta, tensors, part)
    _check_heads(path, meta, tensors)
    return Bundle(path=path, meta=meta, tensors=tensors)


def make_meta(
    *,
    image_spec,
    audio_spec=None,
    distance: str,
    image_input: ImageInput,
    audio_config: AudioConfig | None = None,
    provenance: dict[str, Any] | None = None,
    heads: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a bundle.json dictionary from its parts (specs are ``model.bundle.encoder_spec.EncoderSpec``)."""
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "embedding_dim": int(image_spec.embed_dim),
        "distance": distance,
        "image_encoder": image_spec.to_dict(),
        "image_input": image_input.to_dict(),
        "heads": heads or {},
        "provenance": provenance or {},
    }
    if audio_spec is not None:
        meta["audio_encoder"] = audio_spec.to_dict()
        meta["audio"] = (audio_config or AudioConfig()).to_dict()
    return meta


def _as_numpy(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in tensors.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().contiguous().numpy()
        v = np.asarray(v)
        out[k] = v if v.flags.c_contiguous else v.copy()  # keeps 0-d scalars 0-d
    return out


def save(path: str | os.PathLike, meta: dict[str, Any], tensors: Mapping[str, Any],
         overwrite: bool = False) -> Bundle:
    """Write (or update) a bundle folder atomically and return it loaded.

    A new bundle is written to a temporary sibling folder and renamed into place, so a killed
    process leaves either no bundle or a whole one. Updating an existing bundle (``overwrite``)
    replaces bundle.json and weights.safetensors one file at a time with atomic renames; other
    files in the folder (gallery, ONNX) stay.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    arrays = _as_numpy(tensors)
    text = json.dumps(meta, indent=2, sort_keys=False) + "\n"
    if path.exists() and not overwrite:
        raise BundleError(f"{path}: already exists (pass overwrite=True to replace it)")
    if path.exists():
        write_atomic(path / WEIGHTS_FILE, lambda tmp: save_file(arrays, str(tmp)))
        write_text_atomic(path / META_FILE, text)
        return load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging_dir(path) as folder:
        save_file(arrays, str(folder / WEIGHTS_FILE))
        (folder / META_FILE).write_text(text)
    return load(path)


def encoder_tensors(part: str, module) -> dict[str, Any]:
    """A module's state dict under a part prefix, e.g. ``image_encoder.conv1.weight``."""
    return {f"{part}.{k}": v for k, v in module.state_dict().items()}

