"""ImageNet-style ResNets with a CIFAR stem: ResNet18, ResNet34, ResNet50, ResNet101, ResNet152.

RepDistiller's ``resnetv2.py``: a 3x3 stride-1 stem without max-pool, four stages at 32, 16,
8 and 4 pixels (widths 64/128/256/512 times the block expansion), global average pooling
and a linear head named ``linear``. Shortcuts are registered as ``shortcut``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import Features
from .registry import register_model
from .blocks import BasicBlock, Residual, ZooModel, init_weights, residual_stage, run_stages


class Bottleneck(Residual):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, each with BN; shortcut; ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self._add_shortcut("shortcut", in_planes, planes * self.expansion, stride)

    def body(self, x: Tensor) -> Tensor:
        """The residual branch, ``(B, C_in, H, W) -> (B, 4*planes, H/s, W/s)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class _V2BasicBlock(BasicBlock):
    """:class:`~kdlib.models.resnet.BasicBlock` with its projection registered as ``shortcut``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride, shortcut_name="shortcut")


class ResNetV2(ZooModel):
    """ResNet with a CIFAR stem; ``block`` is BasicBlock-like or :class:`Bottleneck`.

    ``forward_features``: stem ``(B, 64, 32, 32)``; stages ``(B, 64e, 32, 32)``,
    ``(B, 128e, 16, 16)``, ``(B, 256e, 8, 8)``, ``(B, 512e, 4, 4)`` after ReLU (``e`` = block
    expansion; pre-ReLU sums of each stage's last block as ``stages_preact``); ``final_map`` is
    the last stage; ``pooled`` ``(B, 512e)``.
    """

    def __init__(self, block: type[nn.Module], num_blocks: tuple[int, int, int, int],
                 num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes, stages = 64, []
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            stages.append(residual_stage(block, in_planes, planes, n, stride))
            in_planes = planes * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights(self)

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear (RepDistiller's ``linear``)."""
        return self.linear

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        """Features of images ``(B, C, 32, 32)`` (shapes in the class docstring)."""
        stem = F.relu(self.bn1(self.conv1(x)))
        stages, preacts = run_stages([self.layer1, self.layer2, self.layer3, self.layer4], stem, preact)
        return self._features(stem, stages, stages[-1], preacts)


@register_model
def ResNet18(num_classes: int = 100, in_channels: int = 3) -> ResNetV2:
    """ResNet-18 (BasicBlocks 2-2-2-2) with a CIFAR stem."""
    return ResNetV2(_V2BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@register_model
def ResNet34(num_classes: int = 100, in_channels: int = 3) -> ResNetV2:
    """ResNet-34 (BasicBlocks 3-4-6-3) with a CIFAR stem."""
    return ResNetV2(_V2BasicBlock, (3, 4, 6, 3), num_classes, in_channels)


@register_model
def ResNet50(num_classes: int = 100, in_channels: int = 3) -> ResNetV2:
    """ResNet-50 (Bottlenecks 3-4-6-3) with a CIFAR stem (a CRD teacher)."""
    return ResNetV2(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)


@register_model
def ResNet101(num_classes: int = 100, in_channels: int = 3) -> ResNetV2:
    """ResNet-101 (Bottlenecks 3-4-23-3) with a CIFAR stem."""
    return ResNetV2(Bottleneck, (3, 4, 23, 3), num_classes, in_channels)


@register_model
def ResNet152(num_classes: int = 100, in_channels: int = 3) -> ResNetV2:
    """ResNet-152 (Bottlenecks 3-8-36-3) with a CIFAR stem (CD's CIFAR teacher)."""
    return ResNetV2(Bottleneck, (3, 8, 36, 3), num_classes, in_channels)
