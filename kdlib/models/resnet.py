"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4).

The family follows RepDistiller's ``resnet.py``: a 3x3 stem, three stages of BasicBlocks at
32x32, 16x16 and 8x8, global average pooling and a linear head named ``fc``. Depth is
``6n + 2`` with ``n`` blocks per stage.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import BasicBlock, ZooModel, init_weights, residual_stage, run_stages
from .features import Features
from .registry import register_model


class ResNet(ZooModel):
    """CIFAR ResNet of depth ``6n + 2`` with stage widths ``widths[1:]`` and stem width ``widths[0]``.

    ``forward_features``: stem ``(B, w0, 32, 32)``; stages ``(B, w1, 32, 32)``, ``(B, w2, 16, 16)``,
    ``(B, w3, 8, 8)`` after ReLU (pre-ReLU sums of each stage's last block as ``stages_preact``);
    ``final_map`` is the last stage; ``pooled`` ``(B, w3)``.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100,
                 in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = residual_stage(BasicBlock, widths[0], widths[1], n, stride=1)
        self.layer2 = residual_stage(BasicBlock, widths[1], widths[2], n, stride=2)
        self.layer3 = residual_stage(BasicBlock, widths[2], widths[3], n, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear (RepDistiller's ``fc``)."""
        return self.fc

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        """Features of images ``(B, C, 32, 32)`` (shapes in the class docstring)."""
        stem = F.relu(self.bn1(self.conv1(x)))
        stages, preacts = run_stages([self.layer1, self.layer2, self.layer3], stem, preact)
        return self._features(stem, stages, stages[-1], preacts)


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@register_model
def resnet8(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-8, widths 16/32/64 (0.08M parameters)."""
    return ResNet(8, _NARROW, num_classes, in_channels)


@register_model
def resnet14(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-14, widths 16/32/64."""
    return ResNet(14, _NARROW, num_classes, in_channels)


@register_model
def resnet20(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-20, widths 16/32/64."""
    return ResNet(20, _NARROW, num_classes, in_channels)


@register_model
def resnet32(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-32, widths 16/32/64."""
    return ResNet(32, _NARROW, num_classes, in_channels)


@register_model
def resnet44(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-44, widths 16/32/64."""
    return ResNet(44, _NARROW, num_classes, in_channels)


@register_model
def resnet56(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-56, widths 16/32/64 (a CRD teacher)."""
    return ResNet(56, _NARROW, num_classes, in_channels)


@register_model
def resnet110(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-110, widths 16/32/64 (a CRD teacher)."""
    return ResNet(110, _NARROW, num_classes, in_channels)


@register_model
def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-8 four times wider: stem 32, stages 64/128/256."""
    return ResNet(8, _WIDE, num_classes, in_channels)


@register_model
def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-32 four times wider: stem 32, stages 64/128/256 (a CRD teacher)."""
    return ResNet(32, _WIDE, num_classes, in_channels)
