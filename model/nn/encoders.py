"""Image and audio encoders: ResNets with torchvision's state-dict names and a linear embedding head.

An encoder maps an input of shape (N, C, H, W) to an embedding of shape (N, embed_dim):

    stem:   conv1 (7x7, stride 2, padding 3, no bias) -> bn1 -> ReLU -> max-pool 3x3 stride 2 padding 1
    stages: layer1..layer4 of BasicBlocks (ResNet-18/34) or Bottlenecks "v1.5" (ResNet-50: the stride
            sits on the 3x3 conv); layer2..layer4 halve the resolution
    head:   mean over all spatial positions -> fc (Linear feature_dim -> embed_dim)

The whole network is described by an `EncoderSpec` (block type, blocks per stage, stem width, stage
widths, input channels, embedding size), so that non-standard widths such as those of the published
SoundingEarth checkpoints (stem 32, planes 64/182/256/512) are built exactly and can be inferred from
a state dict with `infer_spec`. Both live in the torch-free `model.bundle.encoder_spec` (so bundles can be
checked where only ONNX Runtime is installed) and are re-exported here.

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

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model.bundle.encoder_spec import (
    BLOCK_EXPANSION,
    CUSTOM_ARCH,
    STANDARD_ARCHS,
    STANDARD_STEM_WIDTH,
    STANDARD_WIDTHS,
    EncoderSpec,
    EncoderSpecError,
    expected_shapes,
    infer_spec,
    standard_name,
)

# The spec and its shape logic live in model.bundle.encoder_spec (no torch); they are re-exported here.
__all__ = [
    "BLOCK_EXPANSION", "CUSTOM_ARCH", "STANDARD_ARCHS", "STANDARD_STEM_WIDTH", "STANDARD_WIDTHS",
    "EncoderSpec", "EncoderSpecError", "expected_shapes", "infer_spec", "standard_name",
    "BasicBlock", "Bottleneck", "ResNetEncoder", "AudioEncoder", "ResNetFeatures", "segment_mean",
    "build_encoder", "build_image_encoder", "build_audio_encoder",
    "encoder_from_bundle", "image_encoder_from_bundle", "audio_encoder_from_bundle",
]


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


# ----------------------------------------------------------------------------------------------
# Feature maps for segmentation decoders

FEATURE_STRIDES = (1, 2, 4, 8, 16, 32)  # input, stem, layer1..layer4, before any dilation


def _dilate(stage: nn.Module, rate: int) -> None:
    """Every convolution of ``stage`` gets stride 1, dilation ``rate`` and the padding that keeps
    the size ((k // 2) * rate); weights are unchanged."""
    for conv in stage.modules():
        if isinstance(conv, nn.Conv2d):
            conv.stride = (1, 1)
            conv.dilation = (rate, rate)
            conv.padding = tuple(k // 2 * rate for k in conv.kernel_size)


class ResNetFeatures(ResNetEncoder):
    """The spec's ResNet without ``fc``, returning the feature maps a segmentation decoder reads.

    forward(x) = [x, stem, layer1, layer2, layer3, layer4][: depth + 1]; stem is conv1-bn1-ReLU
    (before the max-pool). Feature i has shape (N, out_channels[i], H / s_i, W / s_i) with
    s = FEATURE_STRIDES capped at ``output_stride``, and out_channels = (in_channels, stem_width,
    c_1, c_2, c_3, c_4), c_k = widths[k] * expansion.

    ``output_stride`` 16 or 8 keeps the resolution of the stages past it (layer4, and layer3 for 8)
    and dilates their convolutions instead (rate = the stride they had / output_stride), DeepLab's
    atrous trick. This is the encoder interface of segmentation_models_pytorch (``out_channels``,
    ``output_stride``, ``forward`` -> list, ``make_dilated``), so its decoders can sit on any spec;
    the state dict is the backbone's, in torchvision names (``ResNetEncoder``'s without ``fc.``).
    """

    def __init__(self, spec: EncoderSpec, depth: int = 5, output_stride: int = 32) -> None:
        if isinstance(depth, bool) or depth not in (1, 2, 3, 4, 5):
            raise EncoderSpecError(f"feature encoder: depth must be 1-5 stages, got {depth!r}")
        super().__init__(spec)
        del self.fc
        self.depth = depth
        self._output_stride = 32
        if output_stride != 32:
            self.make_dilated(output_stride)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of the depth + 1 feature maps forward returns."""
        stages = tuple(w * self.spec.expansion for w in self.spec.widths)
        return ((self.spec.in_channels, self.spec.stem_width) + stages)[: self.depth + 1]

    @property
    def output_stride(self) -> int:
        """Input pixels per pixel of the deepest feature map forward returns."""
        return min(self._output_stride, FEATURE_STRIDES[self.depth])

    def make_dilated(self, output_stride: int) -> None:
        """Stop downsampling at ``output_stride`` (16 or 8) px: layer3 (stride 16) and layer4
        (stride 32) past it run at stride 1 with convolutions dilated by stride / output_stride."""
        if output_stride not in (8, 16):
            raise EncoderSpecError(f"feature encoder: output stride must be 8 or 16, got {output_stride!r}")
        for stage, stride in ((self.layer3, 16), (self.layer4, 32)):
            if stride > output_stride:
                _dilate(stage, stride // output_stride)
        self._output_stride = output_stride

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        """(N, C, H, W) -> depth + 1 feature maps (class doc)."""
        if x.ndim != 4 or x.shape[1] != self.spec.in_channels:
            raise ValueError(
                f"encoder input must be (N, {self.spec.in_channels}, H, W), got {tuple(x.shape)}"
            )
        features = [x, self.relu(self.bn1(self.conv1(x)))]
        y = self.maxpool(features[-1])
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4)[: self.depth - 1]:
            y = stage(y)
            features.append(y)
        return features


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


def conv_head_init_(encoder: ResNetEncoder) -> ResNetEncoder:
    """Draw ``encoder.fc.weight`` (D, C) as the SoundingEarth reference initialised its 1x1-conv head
    (D, C, 1, 1): ``nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu")``, normal with std
    sqrt(2 / D) (the fan out of both is D); the bias keeps torch's default, as the reference's did.
    In place; returns ``encoder``."""
    nn.init.kaiming_normal_(encoder.fc.weight, mode="fan_out", nonlinearity="relu")
    return encoder


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


def encoder_from_bundle(bundle: Any, part: str, share: bool = False) -> ResNetEncoder:
    """The bundle's ``part`` ("image_encoder" or "audio_encoder") as a torch module in eval mode.

    The network comes from the part's spec in bundle.json, the weights from its ``part.`` tensors,
    loaded strictly; ``bundle`` is a loaded ``model.bundle.Bundle``. ``share``: the module's
    weights are the bundle's own arrays, not copies (:func:`bundle_state`; for inference only).
    """
    kind = AudioEncoder if part == "audio_encoder" else ResNetEncoder
    encoder = kind(bundle.encoder_spec(part))
    encoder.load_state_dict(bundle_state(bundle.part_tensors(part), share), strict=True, assign=share)
    return encoder.eval()


def bundle_state(arrays: dict[str, np.ndarray], share: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a bundle's NumPy arrays: copies (safe to train), or with ``share`` tensors
    on the arrays' own memory, to be loaded with ``assign=True`` so that modules made from one
    bundle (the image encoder and the land-cover segmenter's encoder) hold its weights once, not
    once per module: an inference process then keeps one copy of the weights instead of three."""
    return {k: torch.from_numpy(v if share else np.array(v)) for k, v in arrays.items()}


def image_encoder_from_bundle(bundle: Any, share: bool = False) -> ResNetEncoder:
    """The bundle's image encoder (normalised pixels (N, 3, T, T) -> (N, D)), eval mode."""
    return encoder_from_bundle(bundle, "image_encoder", share)


def audio_encoder_from_bundle(bundle: Any, share: bool = False) -> AudioEncoder:
    """The bundle's audio encoder (log-mel chunks (N, 1, n_mels, frames) -> (N, D)), eval mode."""
    return encoder_from_bundle(bundle, "audio_encoder", share)  # type: ignore[return-value]
