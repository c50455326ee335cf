"""ShuffleNet V1 (groups 3) and V2 (x1) for CIFAR, RepDistiller's ``ShuffleNetv1.py`` / ``ShuffleNetv2.py``.

Both use a 1x1 stride-1 stem to 24 channels and three stride-2 stages (32 -> 16 -> 8 -> 4
pixels) and a Linear head named ``linear``. V2 adds a 1x1 conv to 1024 channels (``conv2``)
before pooling, so its ``final_map`` is not a stage output. RepDistiller leaves both with
PyTorch's default initialisation, and so does kdlib.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import Features
from .registry import register_model
from .blocks import PreactBlock, Stage, ZooModel, run_stages

STEM_WIDTH = 24


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups: ``(B, C, H, W) -> (B, C, H, W)``."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
            groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free conv (``padding = kernel_size // 2``) and the BN that follows it."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                     groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


class ShuffleV1Block(PreactBlock):
    """ShuffleNet V1 bottleneck.

    Grouped 1x1-BN-ReLU, channel shuffle, 3x3 depthwise (stride)-BN-ReLU, grouped 1x1-BN. A
    stride-1 block adds its input; a stride-2 block concatenates an average-pooled copy of its
    input, so its branch produces ``out_channels - in_channels`` channels of the stage width.
    The first 1x1 of the network (on the 24-channel stem) is not grouped.
    """

    def __init__(self, in_channels: int, branch_channels: int, stride: int, groups: int):
        super().__init__()
        mid = branch_channels // 4
        self.first_groups = 1 if in_channels == STEM_WIDTH else groups
        self.stride = stride
        self.conv1, self.bn1 = conv_bn(in_channels, mid, groups=self.first_groups)
        self.conv2, self.bn2 = conv_bn(mid, mid, 3, stride, groups=mid)
        self.conv3, self.bn3 = conv_bn(mid, branch_channels, groups=groups)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C_in, H, W) -> (output, pre-ReLU sum or concatenation)``, both ``(B, C_out, H/s, W/s)``."""
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            preact = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            preact = out + x
        return F.relu(preact), preact


class ShuffleV2Block(nn.Module):
    """ShuffleNet V2 basic unit: split channels in half, transform the second half, concat, shuffle.

    The branch is 1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU. RepDistiller's pre-activation is the
    concatenation before the last ReLU and before the shuffle.
    """

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1, self.bn1 = conv_bn(half, half)
        self.conv2, self.bn2 = conv_bn(half, half, 3, groups=half)
        self.conv3, self.bn3 = conv_bn(half, half)

    def _branch(self, x: Tensor) -> Tensor:
        """Pre-ReLU branch output, ``(B, C/2, H, W) -> (B, C/2, H, W)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn3(self.conv3(self.bn2(self.conv2(out))))

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, H, W) -> (output, un-shuffled pre-activation concatenation)``, both ``(B, C, H, W)``."""
        kept, transformed = x.chunk(2, dim=1)
        preact = self._branch(transformed)
        return channel_shuffle(torch.cat([kept, F.relu(preact)], 1), 2), torch.cat([kept, preact], 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        kept, transformed = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([kept, F.relu(self._branch(transformed))], 1), 2)


class ShuffleV2Down(nn.Module):
    """ShuffleNet V2 stride-2 unit: two branches on the full input, each giving half the output.

    Left: 3x3 depthwise (stride 2)-BN, 1x1-BN-ReLU. Right: 1x1-BN-ReLU, 3x3 depthwise (stride 2)-BN,
    1x1-BN-ReLU. Concatenated and shuffled.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.conv1, self.bn1 = conv_bn(in_channels, in_channels, 3, 2, groups=in_channels)
        self.conv2, self.bn2 = conv_bn(in_channels, mid)
        self.conv3, self.bn3 = conv_bn(in_channels, mid)
        self.conv4, self.bn4 = conv_bn(mid, mid, 3, 2, groups=mid)
        self.conv5, self.bn5 = conv_bn(mid, mid)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``."""
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class _ShuffleNet(ZooModel):
    """Shared stem (1x1 conv to 24 channels, BN, ReLU) and head (``linear``) of both versions."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_channels, STEM_WIDTH)

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear (RepDistiller's ``linear``)."""
        return self.linear

    def _stem(self, x: Tensor) -> Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class ShuffleNetV1(_ShuffleNet):
    """ShuffleNet V1.

    ``forward_features`` on ``(B, C, 32, 32)`` (defaults): stem ``(B, 24, 32, 32)``; stages after
    ReLU ``(B, 240, 16, 16)``, ``(B, 480, 8, 8)``, ``(B, 960, 4, 4)`` (pre-ReLU versions as
    ``stages_preact``); ``final_map`` is the last stage; ``pooled`` ``(B, 960)``.
    """

    def __init__(self, num_classes: int = 100, in_channels: int = 3,
                 out_channels: tuple[int, int, int] = (240, 480, 960),
                 num_blocks: tuple[int, int, int] = (4, 8, 4), groups: int = 3):
        super().__init__(in_channels)
        channels, stages = STEM_WIDTH, []
        for out, n in zip(out_channels, num_blocks):
            blocks = [ShuffleV1Block(channels, out - channels, stride=2, groups=groups)]
            blocks += [ShuffleV1Block(out, out, stride=1, groups=groups) for _ in range(n - 1)]
            stages.append(Stage(*blocks))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(channels, num_classes)

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        """Features of images ``(B, C, 32, 32)`` (shapes in the class docstring)."""
        stem = self._stem(x)
        stages, preacts = run_stages([self.layer1, self.layer2, self.layer3], stem, preact)
        return self._features(stem, stages, stages[-1], preacts)


class ShuffleNetV2(_ShuffleNet):
    """ShuffleNet V2.

    ``forward_features`` on ``(B, C, 32, 32)`` (defaults): stem ``(B, 24, 32, 32)``; stages (shuffled
    unit outputs) ``(B, 116, 16, 16)``, ``(B, 232, 8, 8)``, ``(B, 464, 4, 4)``; ``stages_preact``:
    the last unit's un-shuffled pre-ReLU concatenation, same shapes; ``final_map`` =
    ``relu(bn2(conv2(stage3)))`` ``(B, 1024, 4, 4)``; ``pooled`` ``(B, 1024)``.
    """

    def __init__(self, num_classes: int = 100, in_channels: int = 3,
                 out_channels: tuple[int, int, int, int] = (116, 232, 464, 1024),
                 num_blocks: tuple[int, int, int] = (3, 7, 3)):
        super().__init__(in_channels)
        channels, stages = STEM_WIDTH, []
        for out, n in zip(out_channels, num_blocks):
            stages.append(Stage(ShuffleV2Down(channels, out), *(ShuffleV2Block(out) for _ in range(n))))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2, self.bn2 = conv_bn(channels, out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        """Features of images ``(B, C, 32, 32)`` (shapes in the class docstring)."""
        stem = self._stem(x)
        stages, preacts = run_stages([self.layer1, self.layer2, self.layer3], stem, preact)
        final_map = F.relu(self.bn2(self.conv2(stages[-1])))
        return self._features(stem, stages, final_map, preacts)


@register_model
def ShuffleV1(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV1:
    """ShuffleNet V1, groups 3, widths 240/480/960, 4/8/4 units."""
    return ShuffleNetV1(num_classes, in_channels)


@register_model
def ShuffleV2(num_classes: int = 100, in_channels: int = 3) -> ShuffleNetV2:
    """ShuffleNet V2 x1, widths 116/232/464 and a 1024-channel head, 3/7/3 units."""
    return ShuffleNetV2(num_classes, in_channels)
