"""Land-cover head: a DeepLabV3+ segmenter whose encoder is the bundle's image encoder backbone.

The segmenter is segmentation_models_pytorch's ``DeepLabV3Plus`` (ResNet encoder, ASPP decoder,
segmentation head). Its ``encoder.*`` weights are the bundle's ``image_encoder.*`` tensors without
``fc.``: both use torchvision's ResNet names, so they move across without renaming. Only
standard-width ``resnet18`` / ``resnet50`` image encoders qualify (smp builds exactly those shapes).

Bundle format (other parts rely on exactly this)::

    meta["heads"]["landcover"] = {"classes": [{"name", "color"}], "arch": "deeplabv3plus",
                                  "encoder_name": "resnet18" | "resnet50",
                                  "decoder": {smp kwargs, e.g. decoder_channels, encoder_output_stride},
                                  "tile_size": int (pixels), "gsd": float (metres per pixel)}
    tensors: landcover.decoder.*, landcover.segmentation_head.*

The segmenter outputs logits (N, K, H, W) at the input resolution; class probabilities are
``softmax`` over K (:func:`class_probabilities`). Nothing is downloaded: ``encoder_weights=None``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from model.core.errors import GeoaudioError

HEAD = "landcover"
ARCH = "deeplabv3plus"
ENCODERS = ("resnet18", "resnet50")
HEAD_PARTS = ("decoder.", "segmentation_head.")
DECODER_KWARGS = ("decoder_channels", "decoder_atrous_rates", "decoder_aspp_separable",
                  "decoder_aspp_dropout", "encoder_output_stride", "encoder_depth", "upsampling")


class LandcoverError(GeoaudioError, ValueError):
    """A land-cover head that cannot be built; the message names the bundle and the problem."""


def _decoder_kwargs(decoder: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(decoder) - set(DECODER_KWARGS))
    if unknown:
        raise LandcoverError(f"landcover head: unknown decoder settings {unknown} (known: {list(DECODER_KWARGS)})")
    kwargs = dict(decoder)
    if "decoder_atrous_rates" in kwargs:
        kwargs["decoder_atrous_rates"] = tuple(int(r) for r in kwargs["decoder_atrous_rates"])
    return kwargs


def build_segmenter(encoder_name: str, num_classes: int, **decoder: Any) -> nn.Module:
    """A freshly initialised ``smp.DeepLabV3Plus`` (no downloaded weights), in eval mode.

    encoder_name: "resnet18" or "resnet50"; num_classes: K output channels; decoder: smp keyword
    arguments from :data:`DECODER_KWARGS` (e.g. ``decoder_channels=128, encoder_output_stride=16``).
    """
    import segmentation_models_pytorch as smp

    if encoder_name not in ENCODERS:
        raise LandcoverError(f"landcover head: encoder must be one of {ENCODERS}, got {encoder_name!r}")
    if int(num_classes) < 1:
        raise LandcoverError(f"landcover head: needs at least one class, got {num_classes}")
    model = smp.DeepLabV3Plus(encoder_name=encoder_name, encoder_weights=None, classes=int(num_classes),
                              **_decoder_kwargs(decoder))
    return model.eval()


def _check_encoder(bundle, head: Mapping[str, Any]) -> str:
    """The smp encoder name for the bundle's image encoder, or LandcoverError."""
    spec = bundle.encoder_spec("image_encoder")
    if spec.arch not in ENCODERS or spec.in_channels != 3:
        raise LandcoverError(f"{bundle.path}: image encoder is {spec.arch} with {spec.in_channels} input "
                             f"channels; the land-cover head needs a standard-width RGB resnet18 or resnet50")
    if head.get("encoder_name") != spec.arch:
        raise LandcoverError(f"{bundle.path}: landcover head says encoder {head.get('encoder_name')!r}, "
                             f"image encoder is {spec.arch!r}")
    if head.get("arch") != ARCH:
        raise LandcoverError(f"{bundle.path}: landcover head arch {head.get('arch')!r} is not supported "
                             f"(only {ARCH!r})")
    return spec.arch


def segmenter_from_bundle(bundle) -> nn.Module:
    """The bundle's land-cover segmenter in eval mode: encoder from ``image_encoder.`` (without
    ``fc.``), decoder and segmentation head from ``landcover.``; loaded strictly."""
    head = bundle.heads.get(HEAD)
    if head is None:
        raise LandcoverError(f"{bundle.path}: bundle has no landcover head")
    name = _check_encoder(bundle, head)
    model = build_segmenter(name, len(head["classes"]), **head.get("decoder", {}))
    state = {f"encoder.{k}": v for k, v in bundle.part_tensors("image_encoder").items() if not k.startswith("fc.")}
    state.update(bundle.part_tensors(HEAD))
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise LandcoverError(f"{bundle.path}: landcover tensors do not fit the segmenter "
                             f"({' '.join(first[:2])[:300]})") from None
    return model.eval()


def class_probabilities(segmenter: nn.Module, x: Tensor) -> Tensor:
    """softmax over classes of the segmenter's logits: (N, 3, H, W) -> (N, K, H, W)."""
    return torch.softmax(segmenter(x), dim=1)


def landcover_tensors(segmenter: nn.Module) -> dict[str, Tensor]:
    """The head's bundle tensors: decoder and segmentation head, prefixed ``landcover.``
    (the encoder is stored once, as the image encoder)."""
    return {f"{HEAD}.{k}": v for k, v in segmenter.state_dict().items() if k.startswith(HEAD_PARTS)}


def encoder_state_from_segmenter(segmenter: nn.Module) -> dict[str, Tensor]:
    """The segmenter's encoder weights with torchvision names (no ``fc.``), e.g. after fine-tuning."""
    return {k[len("encoder."):]: v for k, v in segmenter.state_dict().items() if k.startswith("encoder.")}


def landcover_meta(classes: Sequence[Mapping[str, Any]], encoder_name: str, tile_size: int, gsd: float,
                   decoder: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The head's ``bundle.json`` entry (goes under ``meta["heads"]["landcover"]``).

    classes: ``[{"name": str, "color": [r, g, b]}, ...]`` in output-channel order; tile_size: pixels
    the head was trained on; gsd: metres per pixel; decoder: smp kwargs; extra: free-form (e.g. metrics).
    """
    if encoder_name not in ENCODERS:
        raise LandcoverError(f"landcover head: encoder must be one of {ENCODERS}, got {encoder_name!r}")
    entries = []
    for c in classes:
        color = list(c.get("color", ()))
        if not c.get("name") or len(color) != 3 or not all(0 <= int(v) <= 255 for v in color):
            raise LandcoverError(f"landcover head: each class needs a name and a colour of three 0-255 ints, got {c!r}")
        entries.append({"name": str(c["name"]), "color": [int(v) for v in color]})
    if not entries:
        raise LandcoverError("landcover head: needs at least one class")
    if int(tile_size) <= 0 or float(gsd) <= 0:
        raise LandcoverError(f"landcover head: tile_size and gsd must be positive, got {tile_size} px, {gsd} m")
    _decoder_kwargs(decoder or {})
    return {"classes": entries, "arch": ARCH, "encoder_name": encoder_name, "decoder": dict(decoder or {}),
            "tile_size": int(tile_size), "gsd": float(gsd), **extra}
