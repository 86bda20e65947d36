"""``python -m model.import_soundingearth CHECKPOINT.pt --out BUNDLE_DIR``.

Converts a checkpoint of the SoundingEarth reference implementation (a ``state_dict`` of its
whole training model, see ../shared/reference/soundingearth-checkpoints.md) into a geoaudio
bundle:

- the file must be the zip archive ``torch.save`` writes (PyTorch >= 1.6); the sizes of its
  members are read from the zip index first and a checkpoint holding more than
  ``MAX_CHECKPOINT_BYTES`` (1 GiB; the published ones hold about 0.2 GB) is refused before
  anything is loaded (``--force-large`` lifts the limit); an empty file, random bytes or a
  truncated archive are one-line errors;
- the file is read with ``torch.load(..., weights_only=True)``: plain tensors only, no code (a
  pickle that would need code is refused, naming what it refers to; torch's advice to retry
  without ``weights_only`` is never passed on);
- ``img_encoder.module_list.0.*`` becomes ``image_encoder.*`` and ``snd_encoder.module_list.0.*``
  becomes ``audio_encoder.*`` (torchvision ResNet names already);
- the architecture (block type, depth, stem and stage widths, embedding size) is inferred from the
  tensor shapes; the published models have stem 32 and planes 64/182/256/512;
- the 1x1-convolution heads become Linear heads: the reference applies ``fc`` to the image
  feature map and then averages over positions, which equals averaging first and then applying
  ``fc`` because both are linear: ``mean_p(W f_p + b) = W mean_p(f_p) + b``;
- tensors of a loss module (any other top-level prefix) are reported and left out.

The input conventions of the weights are recorded in bundle.json: 192 x 192 px tiles cut as a
384 px centre crop of 1024 px Google Earth tiles (so a tile pixel covers 2 source pixels; the
source ground sample distance is an assumption you can set with ``--source-gsd``), ImageNet
mean/std, the SoundingEarth spectrogram level encoding, and the distance the run's loss compared
embeddings with. That comes from the run's ``config.yml`` when it lies beside the checkpoint (or
is named with ``--config``; :mod:`model.nn.reference_config`: ``LossFunction``, ``SoundReducer``
and the sample settings, each said on the console and kept in the provenance); without one it is
Euclidean (the published triplet-loss models), or ``--distance``.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from model.core.cli import fail, run_cli
from model.core.distance import DISTANCES, EUCLIDEAN
from model.nn.checkpoint_file import MAX_CHECKPOINT_BYTES, CheckpointError, gib, load_checkpoint
from model.nn.reference_config import ReferenceConfig, find_config, read_reference_config

IMAGE_PREFIX = "img_encoder.module_list.0."
AUDIO_PREFIX = "snd_encoder.module_list.0."
ENCODER_ROOTS = ("img_encoder", "snd_encoder")
SOURCE_TILE_PX = 1024
CROP_PX = 384
INPUT_PX = 192
LIMIT_HINT = " (published SoundingEarth checkpoints hold about 0.2 GB; --force-large lifts it)"


def read_checkpoint(path: str | Path, max_bytes: int | None = MAX_CHECKPOINT_BYTES) -> dict[str, Any]:
    """The checkpoint's tensors by name (weights_only loading; nested ``state_dict`` accepted),
    after :func:`check_archive` (``max_bytes``: the size limit, None for none)."""
    import torch

    obj = load_checkpoint(path, max_bytes, LIMIT_HINT)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return obj


def split_parts(path: Path, state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(image encoder tensors, audio encoder tensors, names of other tensors), prefixes removed."""
    image = {k[len(IMAGE_PREFIX):]: v for k, v in state.items() if k.startswith(IMAGE_PREFIX)}
    audio = {k[len(AUDIO_PREFIX):]: v for k, v in state.items() if k.startswith(AUDIO_PREFIX)}
    stray = [k for k in state if k.split(".")[0] in ENCODER_ROOTS
             and not k.startswith((IMAGE_PREFIX, AUDIO_PREFIX))]
    if stray:
        raise CheckpointError(f"{path}: unexpected encoder tensor {stray[0]}")
    if not image:
        raise CheckpointError(f"{path}: no image encoder tensors ({IMAGE_PREFIX}*): not a SoundingEarth checkpoint")
    if not audio:
        raise CheckpointError(f"{path}: no audio encoder tensors ({AUDIO_PREFIX}*): not a SoundingEarth checkpoint")
    others = [k for k in state if k.split(".")[0] not in ENCODER_ROOTS]
    return image, audio, others


def _spec(path: Path, tensors: dict[str, Any], part: str, channels: int):
    from model.nn.encoders import EncoderSpecError, infer_spec

    try:
        spec = infer_spec(tensors)
    except EncoderSpecError as e:
        raise CheckpointError(f"{path}: {part}: {e}") from None
    if spec.in_channels != channels:
        raise CheckpointError(f"{path}: {part} takes {spec.in_channels} input channels, expected {channels}")
    return spec


def _linear_head(tensors: dict[str, Any]) -> dict[str, Any]:
    """Replace a 1x1-conv head weight (D, C, 1, 1) by the equivalent Linear weight (D, C)."""
    out = dict(tensors)
    w = out["fc.weight"]
    if w.ndim == 4:
        out["fc.weight"] = w[:, :, 0, 0].contiguous()
    return out


def convert(checkpoint: str | Path, out: str | Path, source_gsd: float = 0.6, distance: str | None = None,
            audio_overrides: dict[str, Any] | None = None, overwrite: bool = False,
            max_bytes: int | None = MAX_CHECKPOINT_BYTES, config: ReferenceConfig | None = None,
            reference_resize: bool = False):
    """Convert a SoundingEarth checkpoint into a bundle at ``out``; returns the loaded Bundle.

    source_gsd: metres per pixel of the 1024 px source tiles (the encoder input then has
    source_gsd * 384 / 192 metres per pixel); distance: None for the ``config``'s, else Euclidean;
    max_bytes: the archive size limit (None: none); config: the run's reference config, if any;
    reference_resize: resize images as the reference did (bilinear without antialiasing).
    """
    import model.bundle as bundle_mod
    from model.bundle.audio import AudioConfig
    from model.bundle.image_input import ImageInput

    path, out = Path(checkpoint), Path(out)
    distance = _distance(distance, config)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists (choose another --out or pass --overwrite)")
    state = read_checkpoint(path, max_bytes)
    image, audio, others = split_parts(path, state)
    image_spec = _spec(path, image, "image encoder", 3)
    audio_spec = _spec(path, audio, "audio encoder", 1)
    if image_spec.embed_dim != audio_spec.embed_dim:
        raise CheckpointError(f"{path}: image and audio embeddings differ in size "
                              f"({image_spec.embed_dim} vs {audio_spec.embed_dim})")
    audio_config = AudioConfig(**(audio_overrides or {}))
    image_input = ImageInput(
        tile_size=INPUT_PX, gsd=source_gsd * CROP_PX / INPUT_PX,
        note=(f"published SoundingEarth weights: {INPUT_PX} px input from a {CROP_PX} px centre crop of "
              f"{SOURCE_TILE_PX} px Google Earth tiles; source tile gsd {source_gsd} m assumed"),
        antialias=not reference_resize,
    )
    provenance = {
        "source": "SoundingEarth reference implementation checkpoint (Heidler et al., JAG 2023)",
        "checkpoint": path.name,
        "checkpoint_sha256": _sha256(path),
        "ignored_tensors": others,
        "audio_front_end": "level encoding from the reference; sample rate, FFT size, hop and dB reference "
                           "are not documented by the reference code and were set at import",
        "imported_by": "geoaudio model.import_soundingearth",
    }
    if config is not None:
        provenance["reference_config"] = {"file": config.path.name, **config.record}
    meta = bundle_mod.make_meta(image_spec=image_spec, audio_spec=audio_spec, distance=distance,
                                image_input=image_input, audio_config=audio_config, provenance=provenance)
    tensors = {**{f"image_encoder.{k}": v for k, v in _linear_head(image).items()},
               **{f"audio_encoder.{k}": v for k, v in _linear_head(audio).items()}}
    return bundle_mod.save(out, meta, tensors, overwrite=overwrite)


def _distance(asked: str | None, config: ReferenceConfig | None) -> str:
    """The asked distance, the config's, or Euclidean; CheckpointError when the two disagree."""
    if config is None:
        return asked or EUCLIDEAN
    if asked is not None and asked != config.distance:
        raise CheckpointError(f"{config.path}: its LossFunction compares embeddings by {config.distance} distance, "
                              f"but --distance {asked} was given (drop one of them)")
    return config.distance


def _config(args: argparse.Namespace) -> ReferenceConfig | None:
    """The reference config named by --config, else the config.yml beside the checkpoint, else None."""
    if args.no_config:
        return None
    path = Path(args.config) if args.config else find_config(args.checkpoint)
    if path is None:
        return None
    if not path.is_file():
        fail(f"{path}: no such config file")
    config = read_reference_config(path)
    for note in config.notes:
        print(note)
    return config


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.import_soundingearth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .pt state dict released with the SoundingEarth paper")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--source-gsd", type=float, default=0.6,
                   help="metres per pixel of the 1024 px source tiles the weights were trained on (default 0.6, an assumption)")
    p.add_argument("--distance", choices=DISTANCES, default=None,
                   help="euclidean for triplet-loss models (the published ones), cosine for contrastive "
                        "(default: from the run's config.yml, else euclidean)")
    p.add_argument("--config", help="the run's config.yml (default: config.yml beside the checkpoint, if any)")
    p.add_argument("--no-config", action="store_true", help="ignore a config.yml beside the checkpoint")
    p.add_argument("--reference-resize", action="store_true",
                   help="resize images as the reference did, bilinear without antialiasing (recorded in the "
                        "bundle's image input; evaluation then reads no antialiased image cache)")
    p.add_argument("--sample-rate", type=int, help="audio sample rate in Hz to record (default 22050)")
    p.add_argument("--n-fft", type=int, help="FFT size in samples (default 2048)")
    p.add_argument("--hop-length", type=int, help="hop in samples (default 512)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--force-large", action="store_true",
                   help=f"load a checkpoint holding more than {gib(MAX_CHECKPOINT_BYTES)} (the limit otherwise)")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("sample_rate", args.sample_rate), ("n_fft", args.n_fft),
                                   ("hop_length", args.hop_length)) if v is not None}
    if "sample_rate" in overrides:
        overrides.setdefault("fmax", overrides["sample_rate"] / 2)
    if args.source_gsd <= 0:
        fail(f"--source-gsd must be positive, got {args.source_gsd}")
    bundle = convert(args.checkpoint, args.out, source_gsd=args.source_gsd, distance=args.distance,
                     audio_overrides=overrides, overwrite=args.overwrite,
                     max_bytes=None if args.force_large else MAX_CHECKPOINT_BYTES, config=_config(args),
                     reference_resize=args.reference_resize)
    spec = bundle.encoder_spec("image_encoder")
    print(f"wrote {bundle.path}: image {spec.arch} ({spec.block}, stem {spec.stem_width}, widths "
          f"{list(spec.widths)}), audio {bundle.encoder_spec('audio_encoder').arch}, {bundle.embedding_dim}-d, "
          f"{bundle.distance} distance")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
