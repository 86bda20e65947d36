"""The computations that get exported: one torch module per graph, built from a bundle.

Every exporter (ONNX, TensorRT), every parity check and the torch backend use these same modules,
so the graphs and the reference they are compared with cannot drift apart.

| graph              | input (float32)                          | outputs                                   |
| ------------------ | ---------------------------------------- | ----------------------------------------- |
| `image_encoder`    | `image` (N, 3, T, T) normalised pixels   | `embedding` (N, D)                        |
| `image_soundscape` | `image` (N, 3, T, T)                     | `embedding` (N, D), `scores` (N, K)       |
| `landcover`        | `image` (N, 3, S, S)                     | `probabilities` (N, K, S, S)              |
| `audio_encoder`    | `chunks` (N, 1, n_mels, chunk_frames)    | `embedding` (N, D)                        |

T is the bundle's image tile size, S the land-cover head's tile size (pixels); image inputs are
``(p / 255 - mean) / std`` per band (``ImageInput.normalise``). N (the batch) is dynamic.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.nn.encoders import audio_encoder_from_bundle, image_encoder_from_bundle
from model.nn.landcover import class_probabilities, segmenter_from_bundle
from model.nn.soundscape_head import SoundscapeHead

IMAGE_GRAPHS = ("image_encoder", "image_soundscape", "landcover")
GRAPHS = IMAGE_GRAPHS + ("audio_encoder",)


@dataclass(frozen=True)
class GraphSpec:
    """Names and shape of one graph: input name, output names, input shape without the batch."""

    name: str
    input_name: str
    output_names: tuple[str, ...]
    input_shape: tuple[int, ...]


class ImageSoundscape(nn.Module):
    """One encoder pass, two outputs: x -> (z, softmax_k(-d(z, p_k) / T))."""

    def __init__(self, encoder: nn.Module, head: SoundscapeHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return z, self.head(z)


class LandcoverProbabilities(nn.Module):
    """The land-cover segmenter followed by a softmax over classes: (N, 3, S, S) -> (N, K, S, S)."""

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: Tensor) -> Tensor:
        return class_probabilities(self.segmenter, x)


class HalfPrecision(nn.Module):
    """Runs a module in float16 behind a float32 interface: inputs cast down, outputs cast up."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.half()

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        out = self.module(x.half())
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()


def available_graphs(bundle) -> list[str]:
    """The graphs this bundle can produce, in :data:`GRAPHS` order."""
    have = {"image_encoder": bundle.has("image_encoder"),
            "image_soundscape": bundle.has("image_encoder") and "soundscape" in bundle.heads,
            "landcover": bundle.has("image_encoder") and "landcover" in bundle.heads,
            "audio_encoder": bundle.has("audio_encoder")}
    return [g for g in GRAPHS if have[g]]


def graph_spec(bundle, name: str) -> GraphSpec:
    """Input/output names and the per-sample input shape of graph ``name`` for this bundle."""
    tile = bundle.image_input.tile_size
    if name == "image_encoder":
        return GraphSpec(name, "image", ("embedding",), (3, tile, tile))
    if name == "image_soundscape":
        return GraphSpec(name, "image", ("embedding", "scores"), (3, tile, tile))
    if name == "landcover":
        size = int(bundle.heads["landcover"].get("tile_size", tile))
        return GraphSpec(name, "image", ("probabilities",), (3, size, size))
    if name == "audio_encoder":
        cfg = bundle.audio_config
        return GraphSpec(name, "chunks", ("embedding",), (1, cfg.n_mels, cfg.chunk_frames))
    raise ValueError(f"unknown graph {name!r} (known: {', '.join(GRAPHS)})")


def build_graph(bundle, name: str, half: bool = False, share: bool = False) -> nn.Module:
    """The eval-mode torch module of graph ``name`` (float16 inside, float32 outside when ``half``;
    ``share``: weights on the bundle's own arrays, for inference, see ``model.nn.encoders.bundle_state``)."""
    if name == "image_encoder":
        module: nn.Module = image_encoder_from_bundle(bundle, share)
    elif name == "image_soundscape":
        module = ImageSoundscape(image_encoder_from_bundle(bundle, share), SoundscapeHead.from_bundle(bundle))
    elif name == "landcover":
        module = LandcoverProbabilities(segmenter_from_bundle(bundle, share))
    elif name == "audio_encoder":
        module = audio_encoder_from_bundle(bundle, share)
    else:
        raise ValueError(f"unknown graph {name!r} (known: {', '.join(GRAPHS)})")
    module = HalfPrecision(module) if half else module
    return module.eval()


def example_input(bundle, name: str, batch: int = 2) -> Tensor:
    """A random float32 input of graph ``name`` with ``batch`` samples (for tracing)."""
    spec = graph_spec(bundle, name)
    return torch.randn((batch, *spec.input_shape), generator=torch.Generator().manual_seed(0))
