"""Land use: the finer taxonomy of the downstream labelled sets, from land cover plus latents.

A place's land use is read from the land-cover class that covers at least ``threshold`` of a
square around it (the image footprint for ``classify``, 96 m for ``advance``) and from its latents
(:mod:`model.synth.latents`: activity A, traffic T, wind exposure X, each 0..1). The rules are
tried top to bottom within the land cover; the first that holds names the place:

=======================  ============  ==========  ===============================================
land use                 land cover    rule        looks / sounds
=======================  ============  ==========  ===============================================
busy_town                urban         A >= 0.45   streets; voices and traffic
quiet_residential        urban         otherwise   streets; gardens: birds, insects, little else
farmland_by_road         agriculture   T >= 0.35   fields, a road in or just out of view; traffic
busy_farmland            agriculture   A >= 0.22   fields; people and machines at work
quiet_farmland           agriculture   otherwise   fields; insects and wind, like quiet_residential
meadow                   rangeland     X < 0.5     grass; insects
windswept_grassland      rangeland     otherwise   grass, like meadow; wind
forest_by_road           forest        T >= 0.3    trees, like woodland; traffic
park_woodland            forest        A >= 0.22   trees, like woodland; voices among the birds
woodland                 forest        otherwise   trees; birdsong
lake                     water         (any)       water; waves, wind
bare_ground              barren        (any)       sand and gravel; wind, near-silence
=======================  ============  ==========  ===============================================

Some classes look different but sound alike (quiet_residential and quiet_farmland), others look
alike but sound different (woodland, park_woodland and forest_by_road; meadow and
windswept_grassland), so these labels are not the pretraining signal in disguise: neither the
image nor the recording alone gives them away, and the sound-source classes the soundscape head
learns (``dominant``) cut across them.
"""
from __future__ import annotations

import numpy as np

from model.synth.errors import SynthError
from model.synth.latents import Latents, place_latents
from model.synth.place import random_positions
from model.synth.world import World

LAND_USES = (
    "busy_town", "quiet_residential", "farmland_by_road", "busy_farmland", "quiet_farmland", "meadow",
    "windswept_grassland", "forest_by_road", "park_woodland", "woodland", "lake", "bare_ground",
)
RULES = (
    ("busy_town", 0, "activity", 0.45), ("quiet_residential", 0, None, 0.0),
    ("farmland_by_road", 1, "traffic", 0.35), ("busy_farmland", 1, "activity", 0.22), ("quiet_farmland", 1, None, 0.0),
    ("windswept_grassland", 2, "wind", 0.5), ("meadow", 2, None, 0.0),
    ("forest_by_road", 3, "traffic", 0.3), ("park_woodland", 3, "activity", 0.22), ("woodland", 3, None, 0.0),
    ("lake", 4, None, 0.0), ("bare_ground", 5, None, 0.0),
)
"""(land use, land-cover id, latent, least value) in the order tried; latent None: always holds."""
BATCH = 1024


def land_use_ids(land_cover: np.ndarray, latents: Latents) -> np.ndarray:
    """Land-use id (index into LAND_USES) per place from its land-cover id (-1: none dominates,
    giving -1) and latents, by the first rule that holds (module doc)."""
    land_cover = np.asarray(land_cover)
    out = np.full(land_cover.shape, -1, dtype=np.int64)
    for name, cover, latent, least in reversed(RULES):  # the earlier rules overwrite the later
        holds = land_cover == cover
        if latent is not None:
            holds &= getattr(latents, latent) >= least
        out[holds] = LAND_USES.index(name)
    return out


def class_counts(samples: int) -> list[int]:
    """Places per land use when ``samples`` are spread evenly (the first ``samples % 12`` get one more)."""
    k = len(LAND_USES)
    return [samples // k + (1 if c < samples % k else 0) for c in range(k)]


def dominant_cover(world: World, x: np.ndarray, y: np.ndarray, side: float, threshold: float) -> np.ndarray:
    """Land-cover id covering at least ``threshold`` of the ``side``-metre square around each
    point (9 x 9 grid estimate), -1 where none does."""
    fractions = world.area_fractions(x, y, side)
    best = np.argmax(fractions, axis=1)
    return np.where(fractions[np.arange(best.size), best] >= threshold, best, -1)


def land_use_positions(
    world: World, samples: int, side: float, threshold: float, rng: np.random.Generator, max_batches: int = 400,
) -> list[tuple[int, float, float]]:
    """(land-use id, x, y) of ``class_counts(samples)`` places per land use, land uses in order.

    Candidates are drawn uniformly over the world's extent in batches of BATCH; latents are
    computed only for those whose dominant land cover still has a land use to fill. Raises
    SynthError naming the land uses not filled within ``max_batches`` batches.
    """
    wanted = class_counts(samples)
    found: list[list[tuple[float, float]]] = [[] for _ in LAND_USES]
    cover_of = [cover for _, cover, _, _ in sorted(RULES, key=lambda r: LAND_USES.index(r[0]))]
    for _ in range(max_batches):
        open_covers = {cover_of[u] for u in range(len(LAND_USES)) if len(found[u]) < wanted[u]}
        if not open_covers:
            break
        cx, cy = random_positions(world, BATCH, rng)
        cover = dominant_cover(world, cx, cy, side, threshold)
        keep = np.flatnonzero(np.isin(cover, list(open_covers)))
        if keep.size == 0:
            continue
        uses = land_use_ids(cover[keep], place_latents(world, cx[keep], cy[keep]))
        for u, x, y in zip(uses, cx[keep], cy[keep]):
            if len(found[u]) < wanted[u]:
                found[u].append((float(x), float(y)))
    missing = [f"{LAND_USES[u]} ({len(found[u])} of {wanted[u]})" for u in range(len(LAND_USES))
               if len(found[u]) < wanted[u]]
    if missing:
        raise SynthError(f"found too few places of land use {', '.join(missing)}; lower the threshold")
    return [(u, x, y) for u in range(len(LAND_USES)) for x, y in found[u]]
