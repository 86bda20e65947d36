"""Builders of small real test inputs shared by the tests: random-initialised bundles, synthetic
pairs, and the paths of the real files in ../shared/data. Not a test file: tests import from here,
never from each other."""
from __future__ import annotations

from pathlib import Path

from model.synth.pairs import write_pairs
from model.synth.random_bundle import random_bundle

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GEOTIFF = SHARED / "geotiff"
RGB, RGBA = GEOTIFF / "RGB.byte.tif", GEOTIFF / "RGBA.uint16.tif"
ROBIN = SHARED / "audio" / "robin.ogg"

# ---- the mapping tests' bundles (narrow ResNets, 16-d) -----------------------------------------
SOUNDS = [("birds", [20, 160, 40]), ("traffic", [200, 30, 30]), ("water", [30, 60, 220]), ("wind", [180, 180, 180])]
LAND = [("urban", [255, 0, 255]), ("forest", [0, 160, 0]), ("water", [0, 0, 255])]
NARROW = dict(widths=(8, 16, 32, 64), stem_width=8)

def map_bundle(path: Path, gsd: float, landcover: bool, tile_size: int = 64, dim: int = 16) -> Path:
    """A random-initialised bundle: image + audio encoders, soundscape head, optional land cover
    (a land-cover bundle keeps a standard-width resnet18 image encoder, smp's own DeepLabV3+ path;
    without land cover the encoder is narrow, which maps faster)."""
    sounds, land = ([{"name": n, "color": c} for n, c in classes] for classes in (SOUNDS, LAND))
    return random_bundle(path, dim=dim, tile_size=tile_size, gsd=gsd, image_overrides=None if landcover else NARROW,
                         audio_overrides=NARROW, soundscape_classes=sounds, temperature=0.5,
                         landcover_classes=land if landcover else None).path


# ---- the export tests' bundles (resnet18, 128-d, both heads) -----------------------------------
TILE = 64
COLOURS = [[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200], [200, 30, 200]]
CLASSES = [{"name": f"class{i}", "color": c} for i, c in enumerate(COLOURS)]

def full_bundle(path: Path, tile: int = TILE, audio: bool = True, heads: bool = True,
                distance: str = "euclidean", seed: int = 0):
    """A resnet18 (128-d) bundle with random weights; heads: 6 soundscape prototypes and a
    4-class DeepLabV3+ land-cover head sharing the image encoder."""
    return random_bundle(path, dim=128, tile_size=tile, audio=audio, soundscape_classes=CLASSES if heads else None,
                         temperature=2.0, landcover_classes=CLASSES[:4] if heads else None,
                         decoder={"decoder_channels": 32}, distance=distance, seed=seed)


# ---- the gallery and soundscape tests' bundles and pairs (8-d) ---------------------------------
N_PAIRS = 12
PAIRS_SEED = 4  # with 12 pairs, all six sound classes (by dominant source) occur in the training split
SMALL = dict(layers=(1, 1, 1, 1), stem_width=8, widths=(8, 8, 16, 16))
EMBED_DIM = 8


def tiny_bundle(path: Path, seed: int = 0, distance: str = "euclidean", audio: bool = True,
                audio_seed: int | None = None):
    """A random-initialised bundle with 8-dimensional embeddings and 64 px tiles (rewritten if it exists)."""
    return random_bundle(path, dim=EMBED_DIM, tile_size=64, image_overrides=SMALL, audio=audio, audio_overrides=SMALL,
                         distance=distance, seed=seed, audio_seed=audio_seed, overwrite=True)


def small_pairs(path: Path) -> Path:
    """12 small synthetic pairs (64 px, 3 s): one 128-frame audio chunk each."""
    return write_pairs(path, N_PAIRS, size=64, seed=PAIRS_SEED, duration=(3.0, 3.0), workers=1, progress=False)


# ---- the fine-tuning and ADVANCE tests' init bundles (resnet18, 16-d, 0.5 m) -------------------
def init_bundle(path: Path, *, audio: bool = True, **image_overrides) -> Path:
    """A bundle with randomly initialised resnet18 encoders (embedding 16, 64 px tiles at 0.5 m)."""
    return random_bundle(path, dim=16, tile_size=64, gsd=0.5, image_overrides=image_overrides, audio=audio,
                         distance="cosine", provenance={"test": True}).path


# ---- a checkpoint with the published SoundingEarth layout (random values) ----------------------
PUBLISHED_LAYOUT = SHARED.parent / "reference" / "soundingearth-checkpoint-layout.json"
PUBLISHED_R18 = "image_encoder_ResNet18_audio_encoder_ResNet18"  # stem 32, planes 64/182/256/512


def published_state(variant: str = PUBLISHED_R18, seed: int = 0) -> dict:
    """A state dict with every tensor name and shape of the published ``variant``, random values:
    unit-ish BatchNorm scales, running_var in 0.5-1.5, weights ~ N(0, 1/fan_in)."""
    import json

    import numpy as np
    import torch

    layout = json.loads(PUBLISHED_LAYOUT.read_text())[variant]
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(100)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        elif name.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            state[name] = torch.rand(shape, generator=g) * 0.5 + 0.5
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            state[name] = torch.randn(shape, generator=g) / np.sqrt(fan_in)
    return state


def published_checkpoint(path: Path, variant: str = PUBLISHED_R18, seed: int = 0) -> Path:
    """Write ``path`` (torch.save) holding :func:`published_state`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(published_state(variant, seed), path)
    return path
