"""Wide ResNets (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2), RepDistiller's ``wrn.py``.

Pre-activation blocks (BN-ReLU-conv twice, no dropout), depth ``6n + 4``, widths
``16, 16k, 32k, 64k``; the head is BN-ReLU, global average pooling and ``fc``.

Quirks kept from RepDistiller: the exposed stem and stage tensors are raw (the stem conv
output and the residual sums, no ReLU), and ``preact=True`` applies the BN that follows each
stage a second time.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import Features
from .registry import register_model
from .blocks import ZooModel, init_weights


class WideBlock(nn.Module):
    """Pre-activation block: ``shortcut + conv2(relu(bn2(conv1(relu(bn1(x))))))``.

    When the width changes, the 1x1 ``convShortcut`` reads the activated input (as in
    RepDistiller); otherwise the shortcut is the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.convShortcut = (nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
                             if in_planes != out_planes else None)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H/s, W/s)``, the raw residual sum."""
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class WideStage(nn.Module):
    """``n`` WideBlocks held as ``layer`` (RepDistiller's ``NetworkBlock``)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*(WideBlock(in_planes if i == 0 else out_planes, out_planes,
                                               stride if i == 0 else 1) for i in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H/s, W/s)``."""
        return self.layer(x)


class WideResNet(ZooModel):
    """WRN-depth-k for 32x32 inputs.

    ``forward_features``: stem ``(B, 16, 32, 32)`` (raw conv output); stages ``(B, 16k, 32, 32)``,
    ``(B, 32k, 16, 16)``, ``(B, 64k, 8, 8)`` (raw residual sums); ``stages_preact`` = the next BN
    applied to each stage (``block2.layer[0].bn1``, ``block3.layer[0].bn1``, ``bn1``);
    ``final_map`` = ``relu(bn1(stage3))`` ``(B, 64k, 8, 8)``; ``pooled`` ``(B, 64k)``.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.block1 = WideStage(n, widths[0], widths[1], stride=1)
        self.block2 = WideStage(n, widths[1], widths[2], stride=2)
        self.block3 = WideStage(n, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self, zero_linear_bias=True)

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear (RepDistiller's ``fc``)."""
        return self.fc

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        """Features of images ``(B, C, 32, 32)`` (shapes in the class docstring).

        With ``preact=True`` the three BNs are called a second time, as RepDistiller does; in
        train mode that updates their running statistics twice per step.
        """
        stem = self.conv1(x)
        f1 = self.block1(stem)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        final_map = F.relu(self.bn1(f3))
        preacts = None
        if preact:
            preacts = [self.block2.layer[0].bn1(f1), self.block3.layer[0].bn1(f2), self.bn1(f3)]
        return self._features(stem, [f1, f2, f3], final_map, preacts)


@register_model
def wrn_16_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-16-1 (widths 16/32/64)."""
    return WideResNet(16, 1, num_classes, in_channels)


@register_model
def wrn_16_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-16-2 (widths 32/64/128)."""
    return WideResNet(16, 2, num_classes, in_channels)


@register_model
def wrn_40_1(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-40-1 (widths 16/32/64)."""
    return WideResNet(40, 1, num_classes, in_channels)


@register_model
def wrn_40_2(num_classes: int = 100, in_channels: int = 3) -> WideResNet:
    """WRN-40-2 (widths 32/64/128, a CRD teacher)."""
    return WideResNet(40, 2, num_classes, in_channels)
