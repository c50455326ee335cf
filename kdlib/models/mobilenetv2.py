"""MobileNetV2 for CIFAR, RepDistiller's ``mobile_half`` (expansion 6, width 0.5).

A stride-2 3x3 stem (32 -> 16 pixels), seven groups of inverted residuals (``blocks.i.j``),
a 1x1 conv to 1280 channels (``conv2``), global average pooling and a Linear classifier whose
state-dict keys are ``classifier.0.*`` (RepDistiller wraps it in a ``Sequential``).
"""
from __future__ import annotations

from torch import Tensor, nn

from .features import Features
from .registry import register_model
from .blocks import ZooModel, init_weights


def group_settings(t: int) -> list[tuple[int, int, int, int]]:
    """(expansion, channels at width 1, blocks, first stride) of the seven groups."""
    return [(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1), (t, 160, 3, 2),
            (t, 320, 1, 1)]


#: Groups after which RepDistiller reads a feature map (``feats[1:-1]``).
STAGE_ENDS = (1, 2, 4, 6)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """conv(no bias)-BN-ReLU: ``(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise (stride)-BN-ReLU, 1x1 project-BN (linear bottleneck).

    The input is added back when the shape is unchanged. RepDistiller keeps the 1x1 expansion
    even for expansion 1.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            *conv_bn_relu(in_channels, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H/s, W/s)``."""
        out = self.conv(x)
        return x + out if self.use_residual else out


def _add_sequential_index(module, state_dict, prefix, local_metadata) -> None:
    """State-dict post-hook: ``<prefix>weight`` -> ``<prefix>0.weight`` (and the bias)."""
    for name in ("weight", "bias"):
        if prefix + name in state_dict:
            state_dict[prefix + "0." + name] = state_dict.pop(prefix + name)


def _drop_sequential_index(module, state_dict, prefix, *args) -> None:
    """Load pre-hook: ``<prefix>0.weight`` -> ``<prefix>weight`` (and the bias)."""
    for name in ("weight", "bias"):
        if prefix + "0." + name in state_dict:
            state_dict[prefix + name] = state_dict.pop(prefix + "0." + name)


class SequentialKeyLinear(nn.Linear):
    """An ``nn.Linear`` saved and loaded under the keys of a one-element ``Sequential``.

    RepDistiller's classifier is ``Sequential(Linear)``, so its checkpoints hold
    ``classifier.0.weight``; kdlib needs ``model.classifier`` to be the Linear itself. State-dict
    hooks add the ``0.`` on save and remove it on load.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.register_state_dict_post_hook(_add_sequential_index)
        self.register_load_state_dict_pre_hook(_drop_sequential_index)


@register_model
class MobileNetV2(ZooModel):
    """MobileNetV2 for 32x32 inputs; the defaults are RepDistiller's ``mobile_half``.

    ``forward_features`` on ``(B, C, 32, 32)`` at width 0.5: stem ``(B, 16, 16, 16)``; stages
    (outputs of groups 1, 2, 4, 6, linear bottlenecks, not ReLU'd) ``(B, 12, 16, 16)``,
    ``(B, 16, 8, 8)``, ``(B, 48, 4, 4)``, ``(B, 160, 2, 2)``; ``stages_preact`` is the same list
    (RepDistiller ignores ``preact`` here); ``final_map`` = ``conv2`` output ``(B, 1280, 2, 2)``;
    ``pooled`` ``(B, 1280)``.
    """

    def __init__(self, num_classes: int = 100, in_channels: int = 3, expand_ratio: int = 6,
                 width_mult: float = 0.5):
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = conv_bn_relu(in_channels, channels, 3, stride=2)
        groups = []
        for t, c, n, s in group_settings(expand_ratio):
            out = int(c * width_mult)
            groups.append(nn.Sequential(*(
                InvertedResidual(channels if i == 0 else out, out, s if i == 0 else 1, t)
                for i in range(n))))
            channels = out
        self.blocks = nn.ModuleList(groups)
        # RepDistiller widens the 1280-channel head only for width_mult > 1, which the zoo never uses.
        self.conv2 = conv_bn_relu(channels, 1280, 1)
        self.classifier = SequentialKeyLinear(1280, num_classes)
        init_weights(self, linear_std=0.01, zero_linear_bias=True)

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        """Features of images ``(B, C, 32, 32)`` (shapes in the class docstring)."""
        stem = out = self.conv1(x)
        stages = []
        for i, group in enumerate(self.blocks):
            out = group(out)
            if i in STAGE_ENDS:
                stages.append(out)
        return self._features(stem, stages, self.conv2(out), stages if preact else None)

