"""The sane range of every number in bundle.json, and the checks that hold a bundle to them.

A bundle is read from a file anyone can edit, and each number in it sizes an allocation or a
division somewhere downstream: ``audio.n_fft: 1000000000`` asks for a gigasample FFT frame, a
``gsd`` of 1e-300 for ~1e300 tiles, ``std: 0`` divides by zero (an all-NaN map). So every number
is checked against a stated range when the bundle is loaded (:func:`check_meta`, called by
``model.bundle.load``) and whenever an :class:`~model.bundle.image_input.ImageInput` or
:class:`~model.bundle.audio.AudioConfig` is built (:func:`check_fields`). A violation is one line
that names the field by its path in bundle.json, its value and the allowed range, e.g.::

    audio.n_fft is 1000000000; allowed: a whole number from 16 to 65536 (samples)

The ranges (also in docs/bundle.md) are wide enough for every real sensor and front-end we know of
and narrow enough that nothing they allow exhausts a workstation:

- image input: ``tile_size`` 8-2048 px, ``gsd`` 0.001-100000 m (1 mm to 100 km per pixel),
  1-16 ``bands``, ``mean`` 0-1 and ``std`` 0.001-1 per band (on the 0-1 pixel scale);
- audio: ``sample_rate`` 1000-384000 Hz, ``n_fft`` 16-65536 samples, ``hop_length`` 1 to
  ``n_fft`` samples, ``n_mels`` 1-512, ``0 <= fmin < fmax <= sample_rate / 2`` Hz,
  ``chunk_frames`` 1-4096, ``db_ref`` "max" or a power 1e-30-1e30, ``db_offset`` -200-200 dB;
- ``embedding_dim`` 1-8192; encoder ``in_channels`` 1-16, ``stem_width`` and ``widths`` 1-8192,
  ``layers`` 1-256 blocks per stage;
- ``heads`` an object of objects; each head's ``classes`` a list of 1-1024 ``{"name": non-empty
  text, "color": [r, g, b] with 0-255 ints}`` with distinct names; ``soundscape.temperature``
  1e-6-1e6 (distance units), its optional ``query_calibration`` ``alpha`` -1e6-1e6 and ``beta``
  -1e6-0 (logits); ``landcover.tile_size`` and ``landcover.gsd`` as the image input's, and the
  encoder spec a land-cover head may record (``landcover.encoder``) as an encoder's.

Torch-free; raises :class:`BundleValueError`, which ``model.bundle.load`` turns into a
``BundleError`` naming the bundle.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model.core.errors import GeoaudioError


class BundleValueError(GeoaudioError, ValueError):
    """A number, list or object of bundle.json outside its allowed range; the message names the field."""


@dataclass(frozen=True)
class Range:
    """Allowed values ``low <= x <= high`` (``unit`` for the message); ``whole``: integers only."""

    low: float
    high: float
    unit: str = ""
    whole: bool = False

    def describe(self) -> str:
        """``a whole number from 16 to 65536 (samples)`` / ``a number from 0.001 to 100000 (m)``."""
        kind = "a whole number" if self.whole else "a number"
        unit = f" ({self.unit})" if self.unit else ""
        return f"{kind} from {self.low:g} to {self.high:g}{unit}"


TILE_SIZE = Range(8, 2048, "px", whole=True)
GSD = Range(0.001, 100_000, "m per pixel")
MEAN = Range(0.0, 1.0, "0-1 pixel scale")
STD = Range(0.001, 1.0, "0-1 pixel scale")
MAX_BANDS = 16
CALIBRATION_ALPHA = Range(-1e6, 1e6, "logit")
CALIBRATION_BETA = Range(-1e6, 0.0, "logit per distance unit")
EMBEDDING_DIM = Range(1, 8192, whole=True)
IN_CHANNELS = Range(1, MAX_BANDS, "channels", whole=True)
WIDTH = Range(1, 8192, "channels", whole=True)
DEPTH = Range(1, 256, "blocks", whole=True)
SAMPLE_RATE = Range(1000, 384_000, "Hz", whole=True)
N_FFT = Range(16, 65_536, "samples", whole=True)
N_MELS = Range(1, 512, "bands", whole=True)
CHUNK_FRAMES = Range(1, 4096, "frames", whole=True)
DB_REF = Range(1e-30, 1e30, "power")
DB_OFFSET = Range(-200, 200, "dB")
TEMPERATURE = Range(1e-6, 1e6, "distance units")
CLASSES = Range(1, 1024, "classes", whole=True)
COLOUR = Range(0, 255, whole=True)

IMAGE_RANGES = {"tile_size": TILE_SIZE, "gsd": GSD}
AUDIO_RANGES = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "n_mels": N_MELS, "chunk_frames": CHUNK_FRAMES,
                "db_offset": DB_OFFSET}
ENCODER_RANGES = {"in_channels": IN_CHANNELS, "stem_width": WIDTH, "embed_dim": EMBEDDING_DIM}


def _fail(field: str, value: Any, allowed: str) -> BundleValueError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return BundleValueError(f"{field} is {shown}; allowed: {allowed}")


def is_number(value: Any) -> bool:
    """A real, finite number that is not a bool (JSON true/false)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_number(field: str, value: Any, allowed: Range) -> None:
    """BundleValueError naming ``field`` unless ``value`` is a finite number in ``allowed``."""
    if not is_number(value) or (allowed.whole and not isinstance(value, numbers.Integral)) \
            or not allowed.low <= value <= allowed.high:
        raise _fail(field, value, allowed.describe())


def check_fields(prefix: str, values: Mapping[str, Any], ranges: Mapping[str, Range]) -> None:
    """:func:`check_number` for each ``ranges`` field of ``values``, named ``prefix.field``."""
    for name, allowed in ranges.items():
        check_number(f"{prefix}.{name}", values[name], allowed)


def check_list(field: str, value: Any, allowed: Range, what: str = "items") -> list[Any]:
    """``value`` as a list of ``allowed.low``..``allowed.high`` items, or BundleValueError naming ``field``."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__") \
            or not allowed.low <= len(value) <= allowed.high:
        count = f"{allowed.low:g}" if allowed.low == allowed.high else f"{allowed.low:g} to {allowed.high:g}"
        raise _fail(field, value, f"a list of {count} {what}")
    return list(value)


def check_image_input(prefix: str, d: Mapping[str, Any]) -> None:
    """Tile size, GSD, bands and per-band mean and std (ranges in the module doc)."""
    check_fields(prefix, d, IMAGE_RANGES)
    bands = check_list(f"{prefix}.bands", d["bands"], Range(1, MAX_BANDS), "band names")
    if not all(isinstance(b, str) and b for b in bands):
        raise _fail(f"{prefix}.bands", d["bands"], "a list of non-empty band names")
    for name, allowed in (("mean", MEAN), ("std", STD)):
        values = check_list(f"{prefix}.{name}", d[name], Range(len(bands), len(bands)), "numbers (one per band)")
        for i, v in enumerate(values):
            check_number(f"{prefix}.{name}[{i}]", v, allowed)
    if not isinstance(d.get("antialias", True), bool):
        raise _fail(f"{prefix}.antialias", d["antialias"], "true or false")


def check_audio(prefix: str, d: Mapping[str, Any]) -> None:
    """Sample rate, FFT size, hop, mel bands, frequency range, chunk frames and levels (module doc)."""
    check_fields(prefix, d, AUDIO_RANGES)
    check_number(f"{prefix}.hop_length", d["hop_length"], Range(1, d["n_fft"], "samples, at most n_fft", whole=True))
    nyquist = d["sample_rate"] / 2
    check_number(f"{prefix}.fmax", d["fmax"], Range(0, nyquist, "Hz, at most sample_rate / 2"))
    if not (is_number(d["fmin"]) and 0 <= d["fmin"] < d["fmax"]):
        raise _fail(f"{prefix}.fmin", d["fmin"], f"a number from 0 to below fmax {d['fmax']:g} (Hz)")
    ref = d["db_ref"]
    if ref != "max" and not (is_number(ref) and DB_REF.low <= ref <= DB_REF.high):
        raise _fail(f"{prefix}.db_ref", ref, f'"max" or {DB_REF.describe()}')


def check_encoder(prefix: str, d: Any) -> None:
    """Input channels, stem and stage widths, blocks per stage and embedding size of an encoder spec."""
    if not isinstance(d, Mapping):
        raise _fail(prefix, d, "an object (encoder spec)")
    present = {k: v for k, v in ENCODER_RANGES.items() if k in d}
    check_fields(prefix, d, present)
    for name, allowed in (("widths", WIDTH), ("layers", DEPTH)):
        if name in d:
            for i, v in enumerate(check_list(f"{prefix}.{name}", d[name], Range(4, 4), "numbers (one per stage)")):
                check_number(f"{prefix}.{name}[{i}]", v, allowed)


def check_classes(prefix: str, classes: Any) -> None:
    """A list of 1-1024 ``{"name", "color": [r, g, b]}`` objects with distinct non-empty names."""
    names: set[str] = set()
    for i, c in enumerate(check_list(prefix, classes, CLASSES, 'objects {"name", "color"}')):
        where = f"{prefix}[{i}]"
        if not isinstance(c, Mapping) or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise _fail(where, c, 'an object {"name": non-empty text, "color": [r, g, b]}')
        if c["name"] in names:
            raise _fail(f"{where}.name", c["name"], "a name no other class of the head has")
        names.add(c["name"])
        colour = check_list(f"{where}.color", c.get("color"), Range(3, 3), "0-255 ints [r, g, b]")
        for k, v in enumerate(colour):
            check_number(f"{where}.color[{k}]", v, COLOUR)


def check_query_calibration(calibration: Any) -> None:
    """The soundscape head's optional ``query_calibration``: finite ``alpha`` and ``beta`` <= 0
    (``p(d) = 1 / (1 + exp(-(alpha + beta d)))`` must not grow with the distance)."""
    if calibration is None:
        return
    if not isinstance(calibration, Mapping):
        raise _fail("heads.soundscape.query_calibration", calibration, 'an object {"alpha": a, "beta": b, ...}')
    check_number("heads.soundscape.query_calibration.alpha", calibration.get("alpha"), CALIBRATION_ALPHA)
    check_number("heads.soundscape.query_calibration.beta", calibration.get("beta"), CALIBRATION_BETA)


def check_heads(heads: Any) -> None:
    """``heads`` is an object of head objects, each with a valid class list and in-range numbers."""
    if not isinstance(heads, Mapping):
        raise _fail("heads", heads, 'an object such as {"soundscape": {...}} ({} for none)')
    for name, head in heads.items():
        if not isinstance(head, Mapping):
            raise _fail(f"heads.{name}", head, "an object with a class list")
        check_classes(f"heads.{name}.classes", head.get("classes"))
    if "soundscape" in heads:
        check_number("heads.soundscape.temperature", heads["soundscape"].get("temperature"), TEMPERATURE)
        check_query_calibration(heads["soundscape"].get("query_calibration"))
    landcover = heads.get("landcover")
    if landcover is not None:
        for key, allowed in IMAGE_RANGES.items():
            if key in landcover:
                check_number(f"heads.landcover.{key}", landcover[key], allowed)
        if "encoder" in landcover:
            check_encoder("heads.landcover.encoder", landcover["encoder"])


def check_meta(meta: Mapping[str, Any]) -> None:
    """Every number and structure of a bundle.json (ranges in the module doc); the required keys
    are already present. Raises BundleValueError naming the first field out of range."""
    check_number("embedding_dim", meta["embedding_dim"], EMBEDDING_DIM)
    for part in ("image_encoder", "audio_encoder"):
        if part in meta:
            check_encoder(part, meta[part])
    for part in ("image_input", "audio"):  # their numbers: ImageInput.from_dict, AudioConfig.from_dict
        if part in meta and not isinstance(meta[part], Mapping):
            raise _fail(part, meta[part], "an object")
    check_heads(meta["heads"])
