"""Sound classes: named, coloured groups of recordings, and the rules that put a recording in one.

The soundscape head (:mod:`model.heads.soundscape`) learns one prototype per sound class from audio
metadata, never from image labels. A class list assigns each recording (a row of
``metadata.csv``) to at most one class by one of two rules:

- ``dominant``: the value of the metadata column ``dominant`` (the synthetic world writes the
  loudest sound source of a recording); each class lists the values it takes.
- ``keywords``: words in the ``title``, else in the ``description`` (real Aporee-style
  metadata). A keyword matches a whole word, case-insensitively; a trailing ``*`` matches any
  word that starts with it (``bird*``: birds, birdsong); several words match as a phrase
  (``church bell*``). The class mentioned earliest in the title wins (ties: file order); a
  title that names no class falls back to the description the same way.

Recordings that match no class are left out (the caller counts them).

Class files are YAML (the shipped default is ``model/data/sound_classes.yaml``)::

    rule: keywords                 # or: dominant
    classes:
      - name: traffic
        color: [228, 26, 28]       # RGB, 0-255
        keywords: [traffic, car, cars, street, road*]
      - name: birds
        color: [51, 160, 44]
        keywords: [bird*, birdsong, blackbird*, dawn chorus]

With ``rule: dominant`` each class has ``dominant: [values ...]`` instead of ``keywords``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from model.core.errors import GeoaudioError, one_line

RULES = ("dominant", "keywords")
TEXT_COLUMNS = ("title", "description")
DOMINANT_COLUMN = "dominant"
DEFAULT_CLASS_FILE = Path(__file__).with_name("sound_classes.yaml")


class SoundClassError(GeoaudioError, ValueError):
    """A class list that cannot be used; the message names the file (or source) and the problem."""


@dataclass(frozen=True)
class SoundClass:
    """One sound class: its name, RGB colour (0-255) and what assigns a recording to it."""

    name: str
    color: tuple[int, int, int]
    keywords: tuple[str, ...] = ()
    dominant: tuple[str, ...] = ()

    def to_meta(self) -> dict[str, Any]:
        """The bundle's class entry: ``{"name": ..., "color": [r, g, b]}``."""
        return {"name": self.name, "color": list(self.color)}


@dataclass(frozen=True)
class SoundClasses:
    """An ordered class list with its assignment rule; ``source`` names where it came from."""

    classes: tuple[SoundClass, ...]
    rule: str
    source: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def to_meta(self) -> list[dict[str, Any]]:
        return [c.to_meta() for c in self.classes]

    def assign(self, table: pd.DataFrame) -> pd.Series:
        """The class name of each row of ``table`` (same index), or None where no class matches."""
        if self.rule == "dominant":
            return _assign_by_dominant(self, table)
        return _assign_by_keywords(self, table)


# ---- the synthetic world's sound classes --------------------------------------------------------

SYNTHETIC_CLASSES = SoundClasses(
    classes=(
        SoundClass("traffic", (228, 26, 28), dominant=("traffic",)),
        SoundClass("human activity", (255, 127, 0), dominant=("voices", "machinery")),
        SoundClass("insects", (255, 217, 47), dominant=("insects",)),
        SoundClass("birdsong", (51, 160, 44), dominant=("birdsong",)),
        SoundClass("water", (31, 120, 180), dominant=("water",)),
        SoundClass("wind", (153, 153, 153), dominant=("wind",)),
    ),
    rule="dominant",
    source="the synthetic world's sound sources (metadata column 'dominant')",
)
"""Six classes of the synthetic world's seven sound sources (``model.synth.soundscape.SOURCES``):
the loudest source of a recording (its ``dominant``) picks the class; voices and machinery are one
class, "human activity". Their order is the class ids of the scene's ``soundscape_truth.tif``."""


def default_classes(table: pd.DataFrame) -> SoundClasses:
    """The synthetic classes when every ``dominant`` value is a synthetic sound source, else the
    shipped keyword rules (:data:`DEFAULT_CLASS_FILE`)."""
    if DOMINANT_COLUMN in table.columns:
        values = set(table[DOMINANT_COLUMN].dropna().astype(str)) - {""}
        known = {v for c in SYNTHETIC_CLASSES.classes for v in c.dominant}
        if values and values <= known:
            return SYNTHETIC_CLASSES
    return load_classes(DEFAULT_CLASS_FILE)


# ---- reading a class file ---------------------------------------------------------------------

def load_classes(path: str | os.PathLike) -> SoundClasses:
    """Read and validate a YAML class file; SoundClassError names the file and the problem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SoundClassError(f"{path}: no such class file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SoundClassError(f"{path}: not valid YAML ({one_line(e)})") from None
    return classes_from_dict(doc, str(path))


def classes_from_dict(doc: Any, source: str) -> SoundClasses:
    """A :class:`SoundClasses` from a parsed class file (``{"rule": ..., "classes": [...]}``)."""
    if not isinstance(doc, Mapping):
        raise SoundClassError(f"{source}: expected a mapping with 'rule' and 'classes'")
    rule = doc.get("rule", "keywords")
    if rule not in RULES:
        raise SoundClassError(f"{source}: rule must be one of {', '.join(RULES)}, got {rule!r}")
    entries = doc.get("classes")
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise SoundClassError(f"{source}: 'classes' must be a non-empty list")
    classes = tuple(_sound_class(e, rule, source) for e in entries)
    names = [c.name for c in classes]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SoundClassError(f"{source}: class names must be unique, repeated: {', '.join(duplicated)}")
    return SoundClasses(classes=classes, rule=rule, source=source)


def _sound_class(entry: Any, rule: str, source: str) -> SoundClass:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise SoundClassError(f"{source}: every class needs a non-empty 'name', got {entry!r}")
    name = entry["name"].strip()
    color = entry.get("color")
    if (not isinstance(color, Sequence) or isinstance(color, str) or len(color) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
        raise SoundClassError(f"{source}: class {name!r} needs 'color: [r, g, b]' with integers 0-255")
    field = "keywords" if rule == "keywords" else "dominant"
    values = entry.get(field)
    if (not isinstance(values, Sequence) or isinstance(values, str) or not values
            or not all(isinstance(v, str) and v.strip() for v in values)):
        raise SoundClassError(f"{source}: class {name!r} needs a non-empty list of strings in {field!r}")
    values = tuple(v.strip() for v in values)
    return SoundClass(name, (color[0], color[1], color[2]), **{field: values})


# ---- assignment -------------------------------------------------------------------------------

def _assign_by_dominant(classes: SoundClasses, table: pd.DataFrame) -> pd.Series:
    if DOMINANT_COLUMN not in table.columns:
        raise SoundClassError(f"{classes.source}: assigns by the metadata column 'dominant', "
                              "which the metadata does not have")
    lookup = {v: c.name for c in classes.classes for v in c.dominant}
    values = table[DOMINANT_COLUMN].fillna("").astype(str)
    return pd.Series([lookup.get(v) for v in values], index=table.index, dtype=object)


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str]:
    """One case-insensitive regex for a class's keywords (whole words; ``*`` = any word ending)."""
    parts = []
    for keyword in keywords:
        prefix = keyword.endswith("*")
        words = keyword.rstrip("*").split()
        body = r"\s+".join(re.escape(w) for w in words)
        parts.append(body + (r"\w*" if prefix else "") + r"(?!\w)")
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + ")", re.IGNORECASE)


def first_mentioned(text: str, patterns: Sequence[re.Pattern[str]]) -> int | None:
    """Index of the pattern that matches earliest in ``text`` (ties: lower index), or None."""
    best: tuple[int, int] | None = None
    for i, pattern in enumerate(patterns):
        m = pattern.search(text)
        if m is not None and (best is None or m.start() < best[0]):
            best = (m.start(), i)
    return None if best is None else best[1]


def _assign_by_keywords(classes: SoundClasses, table: pd.DataFrame) -> pd.Series:
    present = [c for c in TEXT_COLUMNS if c in table.columns]
    if not present:
        raise SoundClassError(f"{classes.source}: assigns by keywords in {' or '.join(TEXT_COLUMNS)}, "
                              "but the metadata has neither column")
    patterns = [keyword_pattern(c.keywords) for c in classes.classes]
    texts = [table[c].fillna("").astype(str).tolist() for c in present]
    out: list[str | None] = []
    for fields in zip(*texts):
        found = None
        for text in fields:
            found = first_mentioned(text, patterns)
            if found is not None:
                break
        out.append(None if found is None else classes.classes[found].name)
    return pd.Series(out, index=table.index, dtype=object)


def class_ids(assigned: pd.Series, classes: SoundClasses) -> np.ndarray:
    """Class index per row (int64), -1 where no class was assigned."""
    index = {name: i for i, name in enumerate(classes.names)}
    return np.array([index.get(a, -1) if isinstance(a, str) else -1 for a in assigned], dtype=np.int64)
