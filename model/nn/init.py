"""Resolving ``--init``: where a downstream task's ResNet backbone weights come from.

Accepted values:

- ``random``: a freshly initialised ResNet of the task's ``--arch`` (nothing loaded);
- a bundle folder (``bundle.json`` inside): its ``image_encoder`` (ours, or an imported
  SoundingEarth checkpoint whose widths may be non-standard);
- a run folder holding ``bundle/`` (from ``model.train.pretrain``, ``model.train.baselines`` or
  ``model.finetune segment``): that bundle;
- a weights file in torchvision's ResNet names: a ``.pth``/``.pt`` state dict (read with
  ``torch.load(weights_only=True)``; a dict under ``"state_dict"`` or ``"model"`` and a
  ``"module."`` prefix are unwrapped) or a ``.safetensors`` file, e.g. ImageNet weights saved from
  ``torchvision.models.resnet18(...).state_dict()``. Nothing is downloaded.

The backbone is the encoder without its ``fc`` head; each task puts its own head on top. The
encoder shape (:class:`~model.nn.encoders.EncoderSpec`) is inferred from the weights, so any width
works for classification; segmentation checks for a standard resnet18/50 itself.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from model.bundle.files import META_FILE
from model.core.errors import GeoaudioError, one_line
from model.nn.checkpoint_file import check_readable, load_checkpoint
from model.nn.encoders import EncoderSpec, EncoderSpecError, ResNetEncoder, infer_spec
from model.bundle.image_input import ImageInput

RANDOM = "random"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
DEFAULT_EMBED_DIM = 128
_BACKBONE_KEY = re.compile(r"^(conv1|bn1|layer[1-4])\.")


class InitError(GeoaudioError, ValueError):
    """An ``--init`` value that names no usable weights; the message names it and the problem."""


@dataclass
class Init:
    """Resolved initial weights of an image backbone.

    label: short name for reports (``random``, the run or bundle folder's name, the file's stem,
    or the caller's label); kind: "random", "bundle" or "weights"; source: what was given;
    spec: the encoder shape (``embed_dim`` is the bundle's, else 128); backbone: torchvision-named
    tensors without ``fc.`` (None for random); bundle: the loaded bundle when kind is "bundle".
    """

    label: str
    kind: str
    source: str
    spec: EncoderSpec
    backbone: dict[str, Tensor] | None
    bundle: Any = None

    @property
    def image_input(self) -> ImageInput:
        """The bundle's image input, or ImageNet normalisation at the defaults."""
        return self.bundle.image_input if self.bundle is not None else ImageInput()

    def encoder(self, embed_dim: int | None = None) -> ResNetEncoder:
        """A ResNetEncoder holding this backbone and a freshly initialised ``fc`` with
        ``embed_dim`` outputs (default: the spec's); for a classifier, embed_dim = classes."""
        spec = self.spec if embed_dim is None else self.spec.replace(embed_dim=int(embed_dim))
        encoder = ResNetEncoder(spec)
        if self.backbone is not None:
            state = {**self.backbone, **{f"fc.{k}": v for k, v in encoder.fc.state_dict().items()}}
            encoder.load_state_dict(state, strict=True)
        return encoder

    def projection_encoder(self) -> ResNetEncoder:
        """A ResNetEncoder with this backbone and the bundle's own ``fc`` projection (the embedding
        the bundle was trained to produce); InitError for an init without one (random or a
        weights file: their backbones carry no projection)."""
        if self.bundle is None:
            raise InitError(f"{self.source}: no projection to keep (only a bundle's image encoder has one)")
        encoder = ResNetEncoder(self.spec)
        fc = {k: torch.from_numpy(v.copy()) for k, v in self.bundle.part_tensors("image_encoder").items()
              if k.startswith("fc.")}
        encoder.load_state_dict({**self.backbone, **fc}, strict=True)
        return encoder


def find_bundle(path: str | os.PathLike) -> Path | None:
    """The bundle folder at ``path`` (``bundle.json`` inside) or at ``path/bundle``; None otherwise."""
    path = Path(path)
    for candidate in (path, path / "bundle"):
        if (candidate / META_FILE).is_file():
            return candidate
    return None


def bundle_label(bundle_path: Path) -> str:
    """The run's name for a ``RUN/bundle`` folder, else the bundle folder's own name."""
    bundle_path = Path(bundle_path).resolve()
    return bundle_path.parent.name if bundle_path.name == "bundle" else bundle_path.name


def _unwrap(state: Any, path: Path) -> dict[str, Tensor]:
    """A flat name -> tensor dict from a loaded checkpoint ("state_dict"/"model" wrappers, "module.")."""
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InitError(f"{path}: not a state dict of tensors")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a ``.pth``/``.pt`` (:func:`~model.nn.checkpoint_file.load_checkpoint`: checked
    as an archive, then ``torch.load(weights_only=True)``) or ``.safetensors`` file; every failure
    is one line naming the file (:class:`~model.nn.checkpoint_file.CheckpointError` or InitError)."""
    path = check_readable(path, "weights")
    if path.suffix.lower() != ".safetensors":
        return _unwrap(load_checkpoint(path, max_bytes=None), path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state: Any = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InitError(f"{path}: not a readable safetensors file ({one_line(e)[:200]})") from None
    return _unwrap(state, path)


def backbone_spec(backbone: Mapping[str, Tensor], where: str) -> EncoderSpec:
    """The EncoderSpec of torchvision-named backbone tensors (fc absent or ignored), embed_dim 128."""
    layer4 = sorted(k for k in backbone if k.startswith("layer4.") and re.search(r"\.bn\d\.weight$", k))
    if "conv1.weight" not in backbone or not layer4:
        raise InitError(f"{where}: no ResNet backbone (conv1/layer4 tensors) in torchvision names")
    last_bn = max(layer4, key=lambda k: (int(k.split(".")[1]), k))
    placeholder = torch.empty((DEFAULT_EMBED_DIM, backbone[last_bn].shape[0]), device="meta")
    try:
        return infer_spec({**backbone, "fc.weight": placeholder, "fc.bias": placeholder[:, 0]})
    except EncoderSpecError as e:
        raise InitError(f"{where}: {e}") from None


def _from_bundle(path: Path, label: str | None) -> Init:
    import model.bundle as bundle_mod

    bundle = bundle_mod.load(path)
    if "image_encoder" not in bundle.meta:
        raise InitError(f"{path}: bundle has no image encoder")
    spec = bundle.encoder_spec("image_encoder")
    if spec.in_channels != 3:
        raise InitError(f"{path}: image encoder takes {spec.in_channels} channels, not RGB")
    backbone = {k: torch.from_numpy(v.copy()) for k, v in bundle.part_tensors("image_encoder").items()
                if not k.startswith("fc.")}
    return Init(label or bundle_label(path), "bundle", str(path), spec, backbone, bundle)


def _from_file(path: Path, label: str | None) -> Init:
    state = read_weights(path)
    backbone = {k: v for k, v in state.items() if _BACKBONE_KEY.match(k)}
    spec = backbone_spec(backbone, str(path))
    if spec.in_channels != 3:
        raise InitError(f"{path}: backbone takes {spec.in_channels} input channels, not RGB")
    return Init(label or path.stem, "weights", str(path), spec, backbone)


def resolve_init(value: str, arch: str = "resnet18", label: str | None = None) -> Init:
    """Resolve an ``--init`` value (see the module docstring); ``arch`` only matters for ``random``."""
    if value == RANDOM:
        try:
            spec = EncoderSpec.from_arch(arch, in_channels=3, embed_dim=DEFAULT_EMBED_DIM)
        except EncoderSpecError as e:
            raise InitError(str(e)) from None
        return Init(label or RANDOM, RANDOM, RANDOM, spec, None)
    path = Path(value)
    if path.is_dir():
        found = find_bundle(path)
        if found is None:
            raise InitError(f"{path}: neither a bundle (bundle.json) nor a run folder with bundle/")
        return _from_bundle(found, label)
    if path.suffix.lower() in WEIGHT_SUFFIXES:
        return _from_file(path, label)
    if not path.exists():
        raise InitError(f"{value}: no such file or folder (use 'random', a bundle or run folder, "
                        f"or a {'/'.join(WEIGHT_SUFFIXES)} weights file)")
    raise InitError(f"{path}: unsupported weights file (expected {', '.join(WEIGHT_SUFFIXES)})")
