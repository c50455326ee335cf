"""VGG with BatchNorm for CIFAR (vgg8, vgg11, vgg13, vgg16, vgg19), RepDistiller's ``vgg.py``.

Five conv blocks ``block0`` ... ``block4`` (3x3 convs with bias, each followed by BN and ReLU,
except that a block ends at its last BN: the forward applies that ReLU, which makes the
pre-activations available for free). Max-pooling follows blocks 0-2; RepDistiller pools after
block 3 only for 64x64 inputs, so on 32x32 blocks 3 and 4 both run at 4x4. The head is global
average pooling and one Linear, ``classifier``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import Features
from .registry import register_model
from .blocks import ZooModel, init_weights

#: Conv widths of each block, per RepDistiller configuration (S, A, B, D, E).
CONFIGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def conv_block(in_channels: int, widths: list[int]) -> nn.Sequential:
    """conv3x3 (with bias)-BN-ReLU per width, without the final ReLU.

    ``(B, C_in, H, W) -> (B, widths[-1], H, W)``.
    """
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(ZooModel):
    """VGG-BN from a block configuration (see :data:`CONFIGS`).

    ``forward_features`` on ``(B, C, 32, 32)``: stem = ``relu(block0)`` ``(B, 64, 32, 32)``; four
    stages ``relu(block1..4)``: ``(B, 128, 16, 16)``, ``(B, 256, 8, 8)``, ``(B, 512, 4, 4)``,
    ``(B, 512, 4, 4)`` (their BN outputs as ``stages_preact``); ``final_map`` is the last stage;
    ``pooled`` ``(B, 512)``.
    """

    def __init__(self, config: list[list[int]], num_classes: int = 100, in_channels: int = 3):
        super().__init__()
        channels = [in_channels] + [widths[-1] for widths in config]
        self.block0, self.block1, self.block2, self.block3, self.block4 = (
            conv_block(c, widths) for c, widths in zip(channels, config))
        self.classifier = nn.Linear(channels[-1], num_classes)
        init_weights(self, linear_std=0.01, zero_linear_bias=True)

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        """Features of images ``(B, C, 32, 32)`` (shapes in the class docstring)."""
        pool_before_block4 = x.shape[2] == 64
        stem = F.relu(self.block0(x))
        out, stages, preacts = stem, [], []
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4)):
            if i < 3 or pool_before_block4:
                out = F.max_pool2d(out, 2)
            preacts.append(block(out))
            out = F.relu(preacts[-1])
            stages.append(out)
        return self._features(stem, stages, stages[-1], preacts if preact else None)


@register_model
def vgg8(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-8 with BN: one conv per block (a CRD student)."""
    return VGG(CONFIGS["vgg8"], num_classes, in_channels)


@register_model
def vgg11(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-11 with BN."""
    return VGG(CONFIGS["vgg11"], num_classes, in_channels)


@register_model
def vgg13(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-13 with BN (a CRD teacher)."""
    return VGG(CONFIGS["vgg13"], num_classes, in_channels)


@register_model
def vgg16(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-16 with BN."""
    return VGG(CONFIGS["vgg16"], num_classes, in_channels)


@register_model
def vgg19(num_classes: int = 100, in_channels: int = 3) -> VGG:
    """VGG-19 with BN."""
    return VGG(CONFIGS["vgg19"], num_classes, in_channels)
