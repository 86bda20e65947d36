"""The shape of a ResNet encoder, without PyTorch: its spec, its tensor shapes, and the spec of a state dict.

An :class:`EncoderSpec` (block type, blocks per stage, stem width, stage widths, input channels,
embedding size) fixes every tensor of ``model.nn.encoders.ResNetEncoder(spec)``; :func:`expected_shapes`
lists them by torchvision name, and :func:`infer_spec` reads the spec back from a state dict's
shapes. Only shapes are used (``.shape`` of NumPy arrays, torch tensors or placeholders), so
bundles can be validated on a machine that has ONNX Runtime but not PyTorch
(``model.bundle.load``); ``model.nn.encoders`` re-exports these names next to the networks.

Tensor shapes of ``ResNetEncoder(spec)`` with e = expansion (1 basic, 4 bottleneck), p_k = widths[k],
c_0 = stem_width, c_k = p_k * e:

    conv1.weight (c_0, in_channels, 7, 7); BatchNorm X (weight, bias, running_mean, running_var (C,),
    num_batches_tracked ()); layerK.N: basic conv1 (p, c_in, 3, 3), conv2 (p, p, 3, 3); bottleneck
    conv1 (p, c_in, 1, 1), conv2 (p, p, 3, 3), conv3 (p e, p, 1, 1); block 0 of a stage that changes
    resolution (K > 1) or channels has downsample.0 (c_K, c_in, 1, 1) + downsample.1 (BatchNorm);
    fc.weight (embed_dim, c_4), fc.bias (embed_dim,).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from model.core.errors import GeoaudioError

BLOCK_EXPANSION = {"basic": 1, "bottleneck": 4}
STANDARD_ARCHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
STANDARD_STEM_WIDTH = 64
STANDARD_WIDTHS = (64, 128, 256, 512)
CUSTOM_ARCH = "custom"


class EncoderSpecError(GeoaudioError, ValueError):
    """An encoder specification or a state dict that does not describe a valid encoder."""


def _four_positive_ints(value: Any, field: str) -> tuple[int, int, int, int]:
    """Return `value` as a 4-tuple of positive ints, or raise EncoderSpecError naming `field`."""
    try:
        items = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise EncoderSpecError(f"encoder spec: {field} must be 4 integers, got {value!r}") from None
    if len(items) != 4 or any(v < 1 for v in items):
        raise EncoderSpecError(f"encoder spec: {field} must be 4 positive integers, got {value!r}")
    return items  # type: ignore[return-value]


@dataclass
class EncoderSpec:
    """The shape of a ResNet encoder.

    arch: "resnet18", "resnet34", "resnet50" when block, layers, stem_width and widths are exactly
        torchvision's (then the backbone loads into torchvision/timm/smp/torchgeo), else "custom".
        Input channels and embedding size do not affect the name.
    block: "basic" (expansion 1) or "bottleneck" (expansion 4).
    layers: residual blocks in layer1..layer4.
    stem_width: output channels of conv1.
    widths: planes of layer1..layer4; a stage outputs planes * expansion channels.
    in_channels: input channels (3 for RGB imagery, 1 for log-mel spectrograms).
    embed_dim: size of the embedding produced by fc.
    """

    arch: str
    block: str
    layers: tuple[int, int, int, int]
    stem_width: int
    widths: tuple[int, int, int, int]
    in_channels: int
    embed_dim: int = 128

    def __post_init__(self) -> None:
        if self.block not in BLOCK_EXPANSION:
            raise EncoderSpecError(f"encoder spec: block must be 'basic' or 'bottleneck', got {self.block!r}")
        self.layers = _four_positive_ints(self.layers, "layers")
        self.widths = _four_positive_ints(self.widths, "widths")
        for field in ("stem_width", "in_channels", "embed_dim"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EncoderSpecError(f"encoder spec: {field} must be a positive integer, got {value!r}")
        expected = standard_name(self.block, self.layers, self.stem_width, self.widths)
        if self.arch != expected:
            raise EncoderSpecError(
                f"encoder spec: arch {self.arch!r} does not match its block/layers/stem/widths, "
                f"which describe {expected!r}"
            )

    @property
    def expansion(self) -> int:
        """Output channels per plane of a block: 1 for basic, 4 for bottleneck."""
        return BLOCK_EXPANSION[self.block]

    @property
    def feature_dim(self) -> int:
        """Channels of the final feature map: widths[3] * expansion."""
        return self.widths[3] * self.expansion

    @classmethod
    def from_arch(cls, name: str, in_channels: int = 3, embed_dim: int = 128) -> "EncoderSpec":
        """The torchvision-standard spec of `name` ("resnet18", "resnet34" or "resnet50")."""
        if name not in STANDARD_ARCHS:
            known = ", ".join(sorted(STANDARD_ARCHS))
            raise EncoderSpecError(f"encoder spec: unknown arch {name!r} (known: {known})")
        block, layers = STANDARD_ARCHS[name]
        return cls(name, block, layers, STANDARD_STEM_WIDTH, STANDARD_WIDTHS, in_channels, embed_dim)

    def replace(self, **changes: Any) -> "EncoderSpec":
        """A copy with `changes` applied; `arch` is renamed to match the new shape."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise EncoderSpecError(f"encoder spec: unknown field(s) {sorted(unknown)}")
        fields = {**dataclasses.asdict(self), **changes}
        fields["layers"] = _four_positive_ints(fields["layers"], "layers")
        fields["widths"] = _four_positive_ints(fields["widths"], "widths")
        if fields["block"] in BLOCK_EXPANSION:
            fields["arch"] = standard_name(fields["block"], fields["layers"], fields["stem_width"], fields["widths"])
        return EncoderSpec(**fields)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EncoderSpec":
        """Inverse of `to_dict`; `embed_dim` may be absent (128)."""
        if not isinstance(d, Mapping):
            raise EncoderSpecError(f"encoder spec: expected a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        missing = names - set(d) - {"embed_dim"}
        if unknown or missing:
            raise EncoderSpecError(f"encoder spec: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        fields = dict(d)
        fields["layers"] = _four_positive_ints(fields["layers"], "layers")
        fields["widths"] = _four_positive_ints(fields["widths"], "widths")
        return cls(**fields)


def standard_name(block: str, layers: Sequence[int], stem_width: int, widths: Sequence[int]) -> str:
    """The torchvision name of this shape, or "custom"."""
    for name, (std_block, std_layers) in STANDARD_ARCHS.items():
        if (
            block == std_block
            and tuple(layers) == std_layers
            and stem_width == STANDARD_STEM_WIDTH
            and tuple(widths) == STANDARD_WIDTHS
        ):
            return name
    return CUSTOM_ARCH


# ----------------------------------------------------------------------------------------------
# Tensor shapes

BN_BUFFERS = ("weight", "bias", "running_mean", "running_var")


def _bn_shapes(name: str, channels: int) -> dict[str, tuple[int, ...]]:
    """A BatchNorm2d's state: four (channels,) vectors and the 0-d num_batches_tracked."""
    out: dict[str, tuple[int, ...]] = {f"{name}.{b}": (channels,) for b in BN_BUFFERS}
    out[f"{name}.num_batches_tracked"] = ()
    return out


def _block_shapes(name: str, block: str, in_ch: int, planes: int, downsample: bool) -> dict[str, tuple[int, ...]]:
    """One residual block's tensors (module doc), in torch's state-dict order."""
    out_ch = planes * BLOCK_EXPANSION[block]
    if block == "basic":
        convs = [(planes, in_ch, 3), (planes, planes, 3)]
    else:
        convs = [(planes, in_ch, 1), (planes, planes, 3), (out_ch, planes, 1)]
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (c_out, c_in, kernel) in enumerate(convs, start=1):
        shapes[f"{name}.conv{i}.weight"] = (c_out, c_in, kernel, kernel)
        shapes.update(_bn_shapes(f"{name}.bn{i}", c_out))
    if downsample:
        shapes[f"{name}.downsample.0.weight"] = (out_ch, in_ch, 1, 1)
        shapes.update(_bn_shapes(f"{name}.downsample.1", out_ch))
    return shapes


def expected_shapes(spec: EncoderSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of ``ResNetEncoder(spec).state_dict()``, in its order."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (spec.stem_width, spec.in_channels, 7, 7)}
    shapes.update(_bn_shapes("bn1", spec.stem_width))
    in_ch = spec.stem_width
    for k, (planes, depth) in enumerate(zip(spec.widths, spec.layers), start=1):
        out_ch = planes * spec.expansion
        for n in range(depth):
            first = n == 0
            shapes.update(_block_shapes(f"layer{k}.{n}", spec.block, in_ch if first else out_ch, planes,
                                        first and (k > 1 or in_ch != out_ch)))
        in_ch = out_ch
    shapes["fc.weight"] = (spec.embed_dim, spec.feature_dim)
    shapes["fc.bias"] = (spec.embed_dim,)
    return shapes


# ----------------------------------------------------------------------------------------------
# Inferring a spec from weights


_STAGE_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.")


def infer_spec(state_dict: Mapping[str, Any], prefix: str = "") -> EncoderSpec:
    """The EncoderSpec whose ResNetEncoder has exactly the tensors of `state_dict` under `prefix`.

    Reads: block type (a `layer1.0.conv3` means bottleneck), blocks per stage (indices N of
    `layerK.N.`), stem width and input channels (conv1.weight (stem, C, 7, 7)), planes per stage
    (`layerK.0.conv1.weight` output channels), embedding size (fc.weight (D, C) or a 1x1-conv
    (D, C, 1, 1)). Then every expected tensor's shape is checked; keys outside the encoder are ignored.
    Values only need a `.shape` (tensors, or shape placeholders).
    """
    shapes = {k[len(prefix) :]: tuple(v.shape) for k, v in state_dict.items() if k.startswith(prefix)}
    where = f" under prefix {prefix!r}" if prefix else ""
    for key in ("conv1.weight", "fc.weight"):
        if key not in shapes:
            raise EncoderSpecError(f"state dict{where} has no {key}: not a ResNet encoder")
    stem = shapes["conv1.weight"]
    fc = shapes["fc.weight"]
    if len(stem) != 4 or len(fc) not in (2, 4):
        raise EncoderSpecError(f"state dict{where}: conv1.weight {stem} or fc.weight {fc} has the wrong rank")
    block = "bottleneck" if "layer1.0.conv3.weight" in shapes else "basic"
    layers = tuple(_stage_depth(shapes, k, where) for k in range(1, 5))
    widths = tuple(shapes.get(f"layer{k}.0.conv1.weight", (0,))[0] for k in range(1, 5))
    arch = standard_name(block, layers, stem[0], widths)
    spec = EncoderSpec(arch, block, layers, stem[0], widths, stem[1], fc[0])  # type: ignore[arg-type]
    _check_shapes(spec, shapes, where)
    return spec


def _stage_depth(shapes: Mapping[str, tuple], stage: int, where: str) -> int:
    """Number of blocks of layer`stage`; block indices must be 0..n-1."""
    indices = {int(m.group(2)) for k in shapes if (m := _STAGE_BLOCK.match(k)) and int(m.group(1)) == stage}
    if not indices or indices != set(range(len(indices))):
        raise EncoderSpecError(f"state dict{where}: layer{stage} block indices {sorted(indices)} are not 0..n-1")
    return len(indices)


def _check_shapes(spec: EncoderSpec, shapes: Mapping[str, tuple], where: str) -> None:
    """Raise EncoderSpecError on the first tensor missing or shaped unlike ResNetEncoder(spec)."""
    expected = expected_shapes(spec)
    fc_weight = shapes["fc.weight"]
    if len(fc_weight) == 4 and fc_weight[2:] == (1, 1):
        shapes = {**shapes, "fc.weight": fc_weight[:2]}
    for key, shape in expected.items():
        if key not in shapes:
            raise EncoderSpecError(f"state dict{where}: missing {key} expected by the inferred {spec.arch} spec")
        if shapes[key] != shape:
            raise EncoderSpecError(f"state dict{where}: {key} has shape {shapes[key]}, expected {shape}")
    encoder_keys = re.compile(r"^(conv1|bn1|layer[1-4]|fc)\.")
    extra = sorted(k for k in shapes if encoder_keys.match(k) and k not in expected)
    if extra:
        raise EncoderSpecError(f"state dict{where}: unexpected encoder tensor {extra[0]}")
