"""A synthetic SoundingEarth world: places that look and sound like one of six land-cover classes.

One seeded, world-wide class field (``world``) is rendered as aerial texture (``textures``) and
heard as a mix of class sound signatures (``sounds``). Writers lay it out as SoundingEarth pairs
(``pairs``), a georeferenced GeoTIFF scene with ground truth (``scene``) and labelled fine-tuning
sets (``downstream``). Command line: ``python -m model.synth --help``.
"""
from model.synth.errors import SynthError
from model.synth.world import CLASS_COLOURS, CLASSES, DEEPGLOBE_CLASSES, DEEPGLOBE_COLOURS, World

__all__ = ["CLASSES", "CLASS_COLOURS", "DEEPGLOBE_CLASSES", "DEEPGLOBE_COLOURS", "SynthError", "World"]
