"""Land-cover head: a DeepLabV3+ segmenter whose encoder is the bundle's image encoder backbone.

The segmenter is segmentation_models_pytorch's ``DeepLabV3Plus`` (ResNet encoder, ASPP decoder,
segmentation head). Its ``encoder.*`` weights are the bundle's ``image_encoder.*`` tensors without
``fc.``: both use torchvision's ResNet names, so they move across without renaming. Any RGB ResNet
the bundle's encoder spec describes qualifies:

- a standard-width ``resnet18`` / ``resnet50``: smp builds its own encoder of that name (exactly
  those shapes), ``encoder_name`` names it;
- any other spec (e.g. the published SoundingEarth widths, stem 32 and stages 64/182/256/512, or a
  resnet34): the encoder is :class:`model.nn.encoders.ResNetFeatures` built from the spec, which
  replaces smp's encoder after construction, with a decoder sized for its channels; its
  ``encoder_name`` is :data:`SPEC_ENCODER` and the head records the spec under ``encoder``.

Either way the decoder reads the stride-4 layer1 features and the deepest (layer4) features, the
last stage dilated instead of strided so that they sit at ``encoder_output_stride`` (smp's default
16); the logits are upsampled back to the input size.

Bundle format (other parts rely on exactly this)::

    meta["heads"]["landcover"] = {"classes": [{"name", "color"}], "arch": "deeplabv3plus",
                                  "encoder_name": "resnet18" | "resnet50" | "spec",
                                  "encoder": {EncoderSpec fields without embed_dim}   (only with "spec"),
                                  "decoder": {smp kwargs, e.g. decoder_channels, encoder_output_stride},
                                  "tile_size": int (pixels), "gsd": float (metres per pixel)}
    tensors: landcover.decoder.*, landcover.segmentation_head.*

Heads written before ``"spec"`` existed (``resnet18`` / ``resnet50`` only) load unchanged.

The segmenter outputs logits (N, K, H, W) at the input resolution; class probabilities are
``softmax`` over K (:func:`class_probabilities`). Nothing is downloaded: ``encoder_weights=None``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from model.core.errors import GeoaudioError
from model.nn.encoders import EncoderSpec, EncoderSpecError, ResNetFeatures, bundle_state

HEAD = "landcover"
ARCH = "deeplabv3plus"
ENCODERS = ("resnet18", "resnet50")  # smp's own encoders, used for standard-width image encoders
SPEC_ENCODER = "spec"  # encoder_name of a head whose encoder is built from the image encoder's spec
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


def _rgb(spec: EncoderSpec) -> EncoderSpec:
    """``spec`` if it takes RGB input, else LandcoverError."""
    if spec.in_channels != 3:
        raise LandcoverError(f"landcover head: needs an RGB image encoder, got one with {spec.in_channels} "
                             f"input channels")
    return spec


def encoder_fields(spec: EncoderSpec) -> dict[str, Any]:
    """What a ``"spec"`` head records under ``encoder``: the spec's fields without ``embed_dim``
    (the segmenter drops ``fc``)."""
    return {k: v for k, v in spec.to_dict().items() if k != "embed_dim"}


def head_encoder(encoder: str | EncoderSpec) -> dict[str, Any]:
    """The head's encoder entries for an smp encoder name or an image encoder spec:
    ``{"encoder_name": "resnet18" | "resnet50"}`` when smp builds that encoder itself (a standard
    width), else ``{"encoder_name": "spec", "encoder": encoder_fields(spec)}``."""
    if isinstance(encoder, EncoderSpec):
        if _rgb(encoder).arch in ENCODERS:
            return {"encoder_name": encoder.arch}
        return {"encoder_name": SPEC_ENCODER, "encoder": encoder_fields(encoder)}
    if encoder not in ENCODERS:
        raise LandcoverError(f"landcover head: encoder must be one of {ENCODERS} or an encoder spec, got {encoder!r}")
    return {"encoder_name": encoder}


def _smp_settings(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Every :data:`DECODER_KWARGS` setting: ``kwargs`` over the defaults of ``smp.DeepLabV3Plus``."""
    import inspect

    import segmentation_models_pytorch as smp

    params = inspect.signature(smp.DeepLabV3Plus.__init__).parameters
    return {name: kwargs.get(name, params[name].default) for name in DECODER_KWARGS}


def _spec_segmenter(spec: EncoderSpec, num_classes: int, kwargs: Mapping[str, Any]) -> nn.Module:
    """``smp.DeepLabV3Plus`` whose encoder is ``ResNetFeatures(spec)`` and whose decoder is sized
    for its channels: smp builds the model around its resnet18 (validating the settings; the
    segmentation head does not depend on the encoder), then encoder and decoder are replaced."""
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder

    model = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, classes=num_classes, **kwargs)
    s = _smp_settings(kwargs)
    try:
        encoder = ResNetFeatures(spec, depth=s["encoder_depth"], output_stride=s["encoder_output_stride"])
    except EncoderSpecError as e:
        raise LandcoverError(f"landcover head: {e}") from None
    model.encoder = encoder
    model.decoder = DeepLabV3PlusDecoder(
        encoder_channels=encoder.out_channels, encoder_depth=s["encoder_depth"], out_channels=s["decoder_channels"],
        atrous_rates=s["decoder_atrous_rates"], output_stride=s["encoder_output_stride"],
        aspp_separable=s["decoder_aspp_separable"], aspp_dropout=s["decoder_aspp_dropout"])
    model.name = f"deeplabv3plus-{spec.arch}"
    return model


def build_segmenter(encoder: str | EncoderSpec, num_classes: int, **decoder: Any) -> nn.Module:
    """A freshly initialised ``smp.DeepLabV3Plus`` (no downloaded weights), in eval mode.

    encoder: "resnet18" or "resnet50" (smp's encoder), or an RGB image encoder's EncoderSpec (smp's
    encoder for a standard-width resnet18/resnet50, else ``ResNetFeatures(spec)``: module doc);
    num_classes: K output channels; decoder: smp keyword arguments from :data:`DECODER_KWARGS`
    (e.g. ``decoder_channels=128, encoder_output_stride=16``). Input (N, 3, H, W), H and W
    multiples of the output stride; output logits (N, K, H, W).
    """
    import segmentation_models_pytorch as smp

    entry = head_encoder(encoder)
    if int(num_classes) < 1:
        raise LandcoverError(f"landcover head: needs at least one class, got {num_classes}")
    kwargs = _decoder_kwargs(decoder)
    if isinstance(encoder, EncoderSpec) and entry["encoder_name"] == SPEC_ENCODER:
        return _spec_segmenter(encoder, int(num_classes), kwargs).eval()
    model = smp.DeepLabV3Plus(encoder_name=entry["encoder_name"], encoder_weights=None, classes=int(num_classes),
                              **kwargs)
    return model.eval()


def _describe(spec: EncoderSpec) -> str:
    """The spec's shape in words, for messages."""
    return f"{spec.arch} (stem {spec.stem_width}, widths {list(spec.widths)}, {spec.block} blocks {list(spec.layers)})"


def _check_encoder(bundle, head: Mapping[str, Any]) -> str | EncoderSpec:
    """What :func:`build_segmenter` builds the head's encoder from (smp name or the bundle's image
    encoder spec), after checking that the head fits the image encoder; else LandcoverError."""
    spec = bundle.encoder_spec("image_encoder")
    if spec.in_channels != 3:
        raise LandcoverError(f"{bundle.path}: image encoder takes {spec.in_channels} input channels; "
                             f"the land-cover head needs an RGB image encoder")
    if head.get("arch") != ARCH:
        raise LandcoverError(f"{bundle.path}: landcover head arch {head.get('arch')!r} is not supported "
                             f"(only {ARCH!r})")
    name = head.get("encoder_name")
    if name in ENCODERS:
        if spec.arch != name:
            raise LandcoverError(f"{bundle.path}: landcover head was made for a standard-width {name} encoder, "
                                 f"the image encoder is {_describe(spec)}")
        return name
    if name != SPEC_ENCODER:
        raise LandcoverError(f"{bundle.path}: landcover head encoder_name {name!r} is not supported "
                             f"(known: {[*ENCODERS, SPEC_ENCODER]})")
    if _recorded_fields(bundle, head) != encoder_fields(spec):
        raise LandcoverError(f"{bundle.path}: landcover head was made for the encoder {head.get('encoder')}, "
                             f"the image encoder is {_describe(spec)}")
    return spec


def _recorded_fields(bundle, head: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`encoder_fields` of the spec a ``"spec"`` head records; LandcoverError if it is not one."""
    try:
        return encoder_fields(EncoderSpec.from_dict(head.get("encoder")))
    except (EncoderSpecError, TypeError) as e:
        raise LandcoverError(f"{bundle.path}: landcover head has no valid encoder spec ({e})") from None


def segmenter_from_bundle(bundle, share: bool = False) -> nn.Module:
    """The bundle's land-cover segmenter in eval mode: encoder from ``image_encoder.`` (without
    ``fc.``), decoder and segmentation head from ``landcover.``; loaded strictly. ``share``: on the
    bundle's own arrays (``model.nn.encoders.bundle_state``; for inference only)."""
    head = bundle.heads.get(HEAD)
    if head is None:
        raise LandcoverError(f"{bundle.path}: bundle has no landcover head")
    encoder = _check_encoder(bundle, head)
    model = build_segmenter(encoder, len(head["classes"]), **head.get("decoder", {}))
    state = {f"encoder.{k}": v for k, v in bundle.part_tensors("image_encoder").items() if not k.startswith("fc.")}
    state.update(bundle.part_tensors(HEAD))
    try:
        model.load_state_dict(bundle_state(state, share), strict=True, assign=share)
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


def landcover_meta(classes: Sequence[Mapping[str, Any]], encoder: str | EncoderSpec, tile_size: int, gsd: float,
                   decoder: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The head's ``bundle.json`` entry (goes under ``meta["heads"]["landcover"]``).

    classes: ``[{"name": str, "color": [r, g, b]}, ...]`` in output-channel order; encoder: as for
    :func:`build_segmenter` (the image encoder's spec records a non-standard one); tile_size: pixels
    the head was trained on; gsd: metres per pixel; decoder: smp kwargs; extra: free-form (e.g. metrics).
    """
    encoder_entry = head_encoder(encoder)
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
    return {"classes": entries, "arch": ARCH, **encoder_entry, "decoder": dict(decoder or {}),
            "tile_size": int(tile_size), "gsd": float(gsd), **extra}
