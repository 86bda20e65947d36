"""Random-initialised bundles: small, valid, reproducible models for tests, benchmarks and smoke tests.

    python -m model.synth.random_bundle --out runs/smoke/bundle [--dim 16] [--tile-size 64] [--gsd 0.5]
                                  [--soundscape-classes 4] [--landcover-classes 3] [--no-audio]

A random bundle has the layout of a trained one (``docs/bundle.md``): an image encoder, optionally
an audio encoder, a soundscape head and a DeepLabV3+ land-cover head, written with
``model.bundle.save``. Its outputs mean nothing; it exercises every code path that reads a bundle
(export, mapping, the app) in seconds and without a download.

Reproducibility: each part is drawn from its own stream seeded with ``seed`` (the audio encoder with
``audio_seed`` when given), so the image encoder depends only on ``seed`` and its shape, not on which
other parts the bundle has. The caller's global torch random state is left as it was.

- encoders: ``model.nn.encoders`` ResNets with their default (Kaiming) initialisation;
- soundscape prototypes: (K, dim) float32 drawn from N(0, 1), scored ``softmax_k(-d(z, p_k) / T)``;
- land cover: a freshly initialised ``smp.DeepLabV3Plus`` decoder whose encoder is the image
  encoder, of any width (``model.nn.landcover``: smp's own ResNet for a standard resnet18 /
  resnet50, else one built from the image encoder's spec).
"""
from __future__ import annotations

import argparse
import colorsys
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from model.core.distance import DISTANCES, EUCLIDEAN

ClassSpec = int | Sequence[str | Mapping[str, Any]] | None


def class_entries(classes: int | Sequence[str | Mapping[str, Any]], prefix: str = "class") -> list[dict[str, Any]]:
    """Head classes ``[{"name", "color"}]`` from a count (names ``{prefix}0`` ...), names, or entries.

    A missing colour is the i-th of n hues spread evenly around the colour wheel (HSV saturation 0.7,
    value 0.9), as 0-255 RGB ints.
    """
    items: Sequence[str | Mapping[str, Any]] = (
        [f"{prefix}{i}" for i in range(classes)] if isinstance(classes, int) else list(classes))
    entries = []
    for i, c in enumerate(items):
        name, color = (c, None) if isinstance(c, str) else (c.get("name"), c.get("color"))
        if color is None:
            color = [round(255 * v) for v in colorsys.hsv_to_rgb(i / len(items), 0.7, 0.9)]
        entries.append({"name": name, "color": [int(v) for v in color]})
    return entries


def _encoders(arch: str, dim: int, image_overrides: Mapping[str, Any], audio: bool,
              audio_overrides: Mapping[str, Any], seed: int, audio_seed: int):
    """(image encoder, audio encoder or None), each built right after seeding torch's global RNG."""
    import torch

    from model.nn.encoders import build_audio_encoder, build_image_encoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        image = build_image_encoder(arch, dim, **image_overrides)
        if not audio:
            return image, None
        torch.manual_seed(audio_seed)
        return image, build_audio_encoder(arch, dim, **audio_overrides)


def _landcover_decoder(spec: Any, num_classes: int, decoder: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Tensors ``landcover.*`` of a freshly initialised DeepLabV3+ (seeded; its encoder is not kept)."""
    import torch

    from model.nn.landcover import build_segmenter, landcover_tensors

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return landcover_tensors(build_segmenter(spec, num_classes, **decoder))


def random_bundle(
    path: str | os.PathLike,
    *,
    arch: str = "resnet18",
    dim: int = 16,
    tile_size: int = 64,
    gsd: float = 0.5,
    image_overrides: Mapping[str, Any] | None = None,
    audio: bool = True,
    audio_overrides: Mapping[str, Any] | None = None,
    soundscape_classes: ClassSpec = None,
    temperature: float = 1.0,
    landcover_classes: ClassSpec = None,
    decoder: Mapping[str, Any] | None = None,
    distance: str = "euclidean",
    provenance: Mapping[str, Any] | None = None,
    seed: int = 0,
    audio_seed: int | None = None,
    overwrite: bool = False,
):
    """Write a random-initialised bundle to ``path`` and return it loaded (a ``model.bundle.Bundle``).

    arch: "resnet18", "resnet34" or "resnet50" for both encoders; dim: embedding size D;
    tile_size: pixels per tile side; gsd: metres per pixel (image input and land-cover head);
    image_overrides / audio_overrides: ``EncoderSpec`` fields, e.g. ``widths=(8, 16, 32, 64),
    stem_width=8`` for a narrow, fast encoder; audio: include an audio encoder;
    soundscape_classes / landcover_classes: a head with that many classes, those names, or those
    ``{"name", "color"}`` entries (None: no head); temperature: the soundscape T in distance units;
    decoder: smp DeepLabV3+ keyword arguments (e.g. ``decoder_channels=32``); distance: "euclidean"
    or "cosine"; provenance: extra ``bundle.json`` provenance fields; seed / audio_seed: see the
    module doc; overwrite: replace an existing bundle's bundle.json and weights (other files stay).
    Bad settings raise ``ValueError`` subclasses (EncoderSpecError, LandcoverError, BundleError ...).
    """
    from model.bundle import encoder_tensors, make_meta, save
    from model.bundle.image_input import ImageInput

    image, sound = _encoders(arch, dim, dict(image_overrides or {}), audio, dict(audio_overrides or {}),
                             seed, seed if audio_seed is None else audio_seed)
    tensors = dict(encoder_tensors("image_encoder", image))
    if sound is not None:
        tensors.update(encoder_tensors("audio_encoder", sound))
    heads: dict[str, Any] = {}
    if soundscape_classes is not None:
        from model.nn.soundscape_head import soundscape_meta, soundscape_tensors

        classes = class_entries(soundscape_classes, "sound")
        protos = np.random.default_rng(seed).standard_normal((len(classes), dim)).astype(np.float32)
        heads["soundscape"] = soundscape_meta(classes, temperature, {"prototypes": "random N(0, 1)"})
        tensors.update(soundscape_tensors(protos))
    if landcover_classes is not None:
        from model.nn.landcover import landcover_meta

        classes = class_entries(landcover_classes, "land")
        heads["landcover"] = landcover_meta(classes, image.spec, tile_size, gsd, dict(decoder or {}))
        tensors.update(_landcover_decoder(image.spec, len(classes), dict(decoder or {}), seed))
    meta = make_meta(image_spec=image.spec, audio_spec=sound.spec if sound is not None else None,
                     distance=distance, image_input=ImageInput(tile_size=tile_size, gsd=gsd), heads=heads,
                     provenance={"made_by": "model.synth.random_bundle", "seed": seed, **(provenance or {})})
    return save(path, meta, tensors, overwrite=overwrite)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.synth.random_bundle",
        description="Write a bundle with random weights (image encoder, optional audio encoder, soundscape "
                    "and land-cover heads) for smoke tests of export, mapping and the app. Its outputs "
                    "mean nothing.",
        epilog="example: python -m model.synth.random_bundle --out runs/smoke/bundle --soundscape-classes 4 "
               "--landcover-classes 3")
    p.add_argument("--out", required=True, type=Path, help="bundle folder to write")
    p.add_argument("--arch", choices=("resnet18", "resnet34", "resnet50"), default="resnet18",
                   help="encoder architecture (default resnet18; land cover needs resnet18 or resnet50)")
    p.add_argument("--dim", type=int, default=16, help="embedding size (default 16)")
    p.add_argument("--tile-size", type=int, default=64, help="tile side in pixels (default 64)")
    p.add_argument("--gsd", type=float, default=0.5, help="metres per pixel of the tiles (default 0.5)")
    p.add_argument("--no-audio", action="store_true", help="leave out the audio encoder")
    p.add_argument("--soundscape-classes", type=int, default=0, metavar="K",
                   help="add a soundscape head with K random prototypes (default 0: none)")
    p.add_argument("--landcover-classes", type=int, default=0, metavar="K",
                   help="add a DeepLabV3+ land-cover head with K classes (default 0: none)")
    p.add_argument("--distance", choices=DISTANCES, default=EUCLIDEAN,
                   help="how embeddings are compared (default euclidean)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from model.core.cli import fail

    args = build_parser().parse_args(argv)
    if args.dim < 1 or args.soundscape_classes < 0 or args.landcover_classes < 0:
        fail("--dim must be at least 1 and the class counts at least 0")
    if args.out.exists() and not args.overwrite:
        fail(f"{args.out}: already exists (pass --overwrite to replace it)")
    bundle = random_bundle(args.out, arch=args.arch, dim=args.dim, tile_size=args.tile_size, gsd=args.gsd,
                           audio=not args.no_audio, soundscape_classes=args.soundscape_classes or None,
                           landcover_classes=args.landcover_classes or None, distance=args.distance,
                           seed=args.seed, overwrite=args.overwrite)
    parts = ["image encoder"] + (["audio encoder"] if bundle.has("audio_encoder") else []) + list(bundle.heads)
    print(f"wrote {bundle.path}: random {args.arch}, {args.dim}-d, {', '.join(parts)}")
    return 0


if __name__ == "__main__":
    from model.core.cli import run_cli

    sys.exit(run_cli(main))
