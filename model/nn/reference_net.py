"""The published SoundingEarth network, written from ../shared/reference/soundingearth-checkpoints.md.

Built from torchvision's own ResNet blocks, independently of model/nn/encoders.py, so it serves as
the baseline of benchmarks/train_throughput.py and as the ground truth that imported checkpoints
are tested against:

- stem: 7x7 conv, stride 2, padding 3, no bias, ``stem`` (32) channels; BN; ReLU; 3x3/2 max-pool;
- stages layer1..4 of planes 64/182/256/512 (BasicBlock, or Bottleneck with expansion 4);
- head ``fc``: a 1x1 Conv2d with bias to ``dim`` (128);
- image forward: fc on the feature map, then the mean over all positions;
- audio forward: global average pool, then fc.

``ReferenceModel`` reproduces the checkpoint's names: ``img_encoder.module_list.0.*`` and
``snd_encoder.module_list.0.*``.
"""
from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

PUBLISHED_STEM = 32
PUBLISHED_PLANES = (64, 182, 256, 512)


class ReferenceResNet(nn.Module):
    """Stem, four stages and a 1x1-conv head; subclasses choose where the head is applied."""

    def __init__(self, block: type, layers: list[int], in_channels: int, stem: int = PUBLISHED_STEM,
                 planes: tuple[int, ...] = PUBLISHED_PLANES, dim: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for i, (n, p) in enumerate(zip(layers, planes)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                down = None
                if j == 0 and (stride != 1 or inplanes != p * block.expansion):
                    down = nn.Sequential(nn.Conv2d(inplanes, p * block.expansion, 1, stride, bias=False),
                                         nn.BatchNorm2d(p * block.expansion))
                blocks.append(block(inplanes, p, stride if j == 0 else 1, down))
                inplanes = p * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Conv2d(inplanes, dim, 1, bias=True)

    def feature_map(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ReferenceImageEncoder(ReferenceResNet):
    def forward(self, x: Tensor) -> Tensor:
        """fc on the feature map, then the mean over all spatial positions: (N, dim)."""
        return self.fc(self.feature_map(x)).mean(dim=(2, 3))


class ReferenceAudioEncoder(ReferenceResNet):
    def forward(self, x: Tensor) -> Tensor:
        """Global average pool, then fc: (N, dim)."""
        return self.fc(self.feature_map(x).mean(dim=(2, 3), keepdim=True))[:, :, 0, 0]


class _ModuleList(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.module_list = nn.ModuleList([net])

    def forward(self, x: Tensor) -> Tensor:
        return self.module_list[0](x)


class ReferenceModel(nn.Module):
    """Image and audio encoders under the checkpoint's names (image ResNet-18 or -50, audio ResNet-18)."""

    def __init__(self, image_depth: int = 18) -> None:
        super().__init__()
        image = (Bottleneck, [3, 4, 6, 3]) if image_depth == 50 else (BasicBlock, [2, 2, 2, 2])
        self.img_encoder = _ModuleList(ReferenceImageEncoder(*image, in_channels=3))
        self.snd_encoder = _ModuleList(ReferenceAudioEncoder(BasicBlock, [2, 2, 2, 2], in_channels=1))
