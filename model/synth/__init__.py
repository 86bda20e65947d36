"""A synthetic SoundingEarth world: places with six land-cover classes and sounds of their own.

One seeded, world-wide class field (``world``) and a road network (``roads``) are rendered as aerial
texture (``textures``); latent fields (``latents``: activity, traffic, water nearby, vegetation,
wind) set the levels of seven sound sources (``soundscape``, signatures in ``sounds``). Labelled
sets use a finer land-use taxonomy (``land_use``); see docs/synthetic_world.md. Writers lay it
out as SoundingEarth pairs (``pairs``), a georeferenced GeoTIFF scene with ground truth
(``scene``) and labelled fine-tuning sets (``downstream``). Command line: ``python -m model.synth --help``.
"""
from model.synth.errors import SynthError
from model.synth.world import CLASS_COLOURS, CLASSES, DEEPGLOBE_CLASSES, DEEPGLOBE_COLOURS, World

__all__ = ["CLASSES", "CLASS_COLOURS", "DEEPGLOBE_CLASSES", "DEEPGLOBE_COLOURS", "SynthError", "World"]
