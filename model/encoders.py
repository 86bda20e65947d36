"""Image and audio encoders: ResNets with torchvision's state-dict names and a linear embedding head.

An encoder maps an input of shape (N, C, H, W) to an embedding of shape (N, embed_dim):

    stem:   conv1 (7x7, stride 2, padding 3, no bias) -> bn1 -> ReLU -> max-pool 3x3 stride 2 padding 1
    stages: layer1..layer4 of BasicBlocks (ResNet-18/34) or Bottlenecks "v1.5" (ResNet-50: the stride
            sits on the 3x3 conv); layer2..layer4 halve the resolution
    head:   mean over all spatial positions -> fc (Linear feature_dim -> embed_dim)

The whole network is described by an `EncoderSpec` (block type, blocks per stage, stem width, stage
widths, input channels, embedding size), so that non-standard widths such as those of the published
SoundingEarth checkpoints (stem 32, planes 64/182/256/512) are built exactly and can be inferred from
a state dict with `infer_spec`.

State-dict keys are exactly torchvision's ResNet names (conv1, bn1, layerK.N.conv1/bn1/conv2/bn2
[/conv3/bn3]/downsample.0/downsample.1, fc.weight/fc.bias), so `backbone_state_dict()` of a
standard-width spec loads into torchvision, timm, segmentation_models_pytorch and torchgeo ResNets
without renaming. timm's `ResNet` is not used because its 7x7 stem ignores `stem_width` (it always
has 64 output channels), which cannot express the published checkpoints.

A published checkpoint's head is a 1x1 Conv2d applied before the spatial mean; because both are
linear, `mean(conv1x1(F)) == fc(mean(F))` with `fc.weight = conv.weight[:, :, 0, 0]`, and
`ResNetEncoder.load_state_dict` accepts either form of `fc.weight`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

BLOCK_EXPANSION = {"basic": 1, "bottleneck": 4}
STANDARD_ARCHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
STANDARD_STEM_WIDTH = 64
STANDARD_WIDTHS = (64, 128, 256, 512)
CUSTOM_ARCH = "custom"


class EncoderSpecError(ValueError):
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
        expected = _standard_name(self.block, self.layers, self.stem_width, self.widths)
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
            fields["arch"] = _standard_name(fields["block"], fields["layers"], fields["stem_width"], fields["widths"])
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


def _standard_name(block: str, layers: Sequence[int], stem_width: int, widths: Sequence[int]) -> str:
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
# Network


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free square convolution with 'same' padding for odd kernels."""
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
    """out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); 3x3 convs, stride on conv1."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv(in_ch, planes, 3, stride)
        self.bn1 = _bn(planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 (planes) -> 3x3 stride s (planes) -> 1x1 (4 * planes), + shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv(in_ch, planes, 1)
        self.bn1 = _bn(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = _bn(planes)
        self.conv3 = _conv(planes, planes * self.expansion, 1)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _make_stage(block: str, in_ch: int, planes: int, depth: int, stride: int) -> nn.Sequential:
    """`depth` blocks; the first gets a 1x1-conv + BN shortcut when it changes resolution or channels."""
    cls = _BLOCKS[block]
    out_ch = planes * cls.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(_conv(in_ch, out_ch, 1, stride), _bn(out_ch))
    blocks = [cls(in_ch, planes, stride, downsample)]
    blocks += [cls(out_ch, planes, 1, None) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ResNetEncoder(nn.Module):
    """A ResNet described by an `EncoderSpec`: (N, C, H, W) -> (N, embed_dim).

    forward(x) = fc(mean over h, w of features(x)); features(x) is the layer4 map of shape
    (N, feature_dim, H/32, W/32) (rounded up). Works with `torch.channels_last` inputs.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.conv1 = _conv(spec.in_channels, spec.stem_width, 7, 2)
        self.bn1 = _bn(spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = spec.stem_width
        for k, (planes, depth) in enumerate(zip(spec.widths, spec.layers), start=1):
            self.add_module(f"layer{k}", _make_stage(spec.block, in_ch, planes, depth, 1 if k == 1 else 2))
            in_ch = planes * spec.expansion
        self.fc = nn.Linear(spec.feature_dim, spec.embed_dim)
        self._init_weights()
        self.register_load_state_dict_pre_hook(_accept_conv_fc)

    def _init_weights(self) -> None:
        """Kaiming-normal (fan_out, ReLU) convolutions; BatchNorm weight 1, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        """The final feature map (N, feature_dim, h, w)."""
        if x.ndim != 4 or x.shape[1] != self.spec.in_channels:
            raise ValueError(
                f"encoder input must be (N, {self.spec.in_channels}, H, W), got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, embed_dim)."""
        return self.fc(self.features(x).mean(dim=(2, 3)))

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The state dict without the `fc.` head: the part shared with other ResNet libraries."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("fc.")}


def _accept_conv_fc(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: a 1x1-conv head weight (D, C, 1, 1) becomes a Linear weight (D, C)."""
    key = prefix + "fc.weight"
    weight = state_dict.get(key)
    if isinstance(weight, Tensor) and weight.ndim == 4 and weight.shape[2:] == (1, 1):
        state_dict[key] = weight[:, :, 0, 0]


class AudioEncoder(ResNetEncoder):
    """A ResNetEncoder over log-mel chunks (M, 1, n_mels, chunk_frames) that also embeds recordings."""

    def embed_recordings(
        self, chunks: Tensor, counts: Sequence[int] | Tensor, batch_size: int | None = None
    ) -> Tensor:
        """Mean chunk embedding per recording: out[r] = mean of forward(chunks[i]) over its counts[r] chunks.

        chunks: (M, 1, n_mels, chunk_frames), recording r's chunks contiguous and in order;
        counts: R positive ints summing to M; batch_size: chunks per forward pass (all at once if None).
        Returns (R, embed_dim).
        """
        counts_t = torch.as_tensor(counts, dtype=torch.long, device=chunks.device).reshape(-1)
        if counts_t.numel() == 0 or bool((counts_t < 1).any()) or int(counts_t.sum()) != chunks.shape[0]:
            raise ValueError(
                f"embed_recordings: counts must be positive and sum to the {chunks.shape[0]} chunks, "
                f"got {counts_t.tolist()}"
            )
        step = chunks.shape[0] if batch_size is None else batch_size
        if step < 1:
            raise ValueError(f"embed_recordings: batch_size must be positive, got {batch_size}")
        z = torch.cat([self(chunks[i : i + step]) for i in range(0, chunks.shape[0], step)])
        return segment_mean(z, counts_t)


def segment_mean(values: Tensor, counts: Tensor) -> Tensor:
    """Mean of consecutive row segments: values (M, D), counts (R,) summing to M -> (R, D)."""
    segment = torch.repeat_interleave(torch.arange(len(counts), device=values.device), counts)
    sums = values.new_zeros(len(counts), values.shape[1]).index_add(0, segment, values)
    return sums / counts.to(values.dtype).unsqueeze(1)


# ----------------------------------------------------------------------------------------------
# Building


def build_encoder(spec: EncoderSpec) -> ResNetEncoder:
    """A freshly initialised ResNetEncoder for `spec`."""
    return ResNetEncoder(spec)


def build_image_encoder(arch: str = "resnet18", embed_dim: int = 128, **overrides: Any) -> ResNetEncoder:
    """An RGB (in_channels=3 unless overridden) encoder; overrides are EncoderSpec fields, e.g. widths."""
    spec = EncoderSpec.from_arch(arch, in_channels=3, embed_dim=embed_dim)
    return ResNetEncoder(spec.replace(**overrides) if overrides else spec)


def build_audio_encoder(arch: str = "resnet18", embed_dim: int = 128, **overrides: Any) -> AudioEncoder:
    """A 1-channel log-mel encoder; overrides are EncoderSpec fields, e.g. stem_width=32."""
    spec = EncoderSpec.from_arch(arch, in_channels=1, embed_dim=embed_dim)
    return AudioEncoder(spec.replace(**overrides) if overrides else spec)


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
    arch = _standard_name(block, layers, stem[0], widths)
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
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ResNetEncoder(spec).state_dict().items()}
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
