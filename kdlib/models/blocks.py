"""Building blocks shared by the zoo's families: the model base class, residual blocks and
stages with RepDistiller's pre-activation outputs, and RepDistiller's initialisation rules."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import Features


class ZooModel(nn.Module):
    """Base class of the zoo: subclasses define ``forward_features`` and ``classifier``.

    ``forward(x)`` maps ``(B, C, 32, 32)`` images to ``(B, K)`` logits.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)`` of images ``(B, C, 32, 32)``."""
        return self.forward_features(x).logits

    def _features(self, stem: Tensor, stages: list[Tensor], final_map: Tensor,
                  stages_preact: list[Tensor] | None = None) -> Features:
        """Pool ``final_map (B, D, h, w)`` globally to ``(B, D)``, classify, pack a :class:`Features`."""
        pooled = torch.flatten(F.adaptive_avg_pool2d(final_map, 1), 1)
        return Features(stem=stem, stages=stages, pooled=pooled, final_map=final_map,
                        logits=self.classifier(pooled), stages_preact=stages_preact)


class PreactBlock(nn.Module):
    """A block whose ``forward_preact(x)`` returns ``(output, pre-activation)``.

    ``forward`` returns the output alone; RepDistiller's ``preact=True`` lists read the
    pre-activation of each stage's last block.
    """

    def forward(self, x: Tensor) -> Tensor:
        """Block output (post-ReLU)."""
        return self.forward_preact(x)[0]


class Residual(PreactBlock):
    """``relu(body(x) + shortcut(x))``, with the pre-ReLU sum as the pre-activation.

    Subclasses build their layers, define ``body(x)``, and call :meth:`_add_shortcut` last so
    that the shortcut's state-dict keys come after the body's, as in RepDistiller.
    """

    def _add_shortcut(self, name: str, in_planes: int, out_planes: int, stride: int) -> None:
        """Register a 1x1 conv + BN projection under ``name`` when the shape changes, else None."""
        projection = None
        if stride != 1 or in_planes != out_planes:
            projection = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes))
        self._shortcut_name = name
        self.add_module(name, projection)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C_in, H, W) -> ((B, C_out, H/s, W/s) output, same-shaped pre-ReLU sum)``."""
        projection = getattr(self, self._shortcut_name)
        preact = self.body(x) + (x if projection is None else projection(x))
        return F.relu(preact), preact


class BasicBlock(Residual):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU.

    RepDistiller names the projection shortcut ``downsample`` in ``resnet.py`` and
    ``shortcut`` in ``resnetv2.py``; ``shortcut_name`` only changes the state-dict keys.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut_name: str = "downsample"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self._add_shortcut(shortcut_name, in_planes, planes, stride)

    def body(self, x: Tensor) -> Tensor:
        """The residual branch, ``(B, C_in, H, W) -> (B, planes, H/s, W/s)``."""
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class Stage(nn.Sequential):
    """Blocks run in sequence; ``forward_preact`` also returns the last block's pre-activation."""

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x -> (stage output, pre-activation of the last block)``."""
        *body, last = self
        for block in body:
            x = block(x)
        return last.forward_preact(x)


def residual_stage(block: type[nn.Module], in_planes: int, planes: int, num_blocks: int,
                   stride: int, **kwargs) -> Stage:
    """``num_blocks`` blocks; the first one changes the width and applies ``stride``."""
    out_planes = planes * block.expansion
    return Stage(*(block(in_planes if i == 0 else out_planes, planes, stride if i == 0 else 1, **kwargs)
                   for i in range(num_blocks)))


def run_stages(stages: list[Stage], x: Tensor, preact: bool) -> tuple[list[Tensor], list[Tensor] | None]:
    """Run ``stages`` in order: ``(outputs, pre-activations or None)``; pre-activations only if asked."""
    outputs, preacts = [], []
    for stage in stages:
        if preact:
            x, pre = stage.forward_preact(x)
            preacts.append(pre)
        else:
            x = stage(x)
        outputs.append(x)
    return outputs, (preacts if preact else None)


def init_weights(model: nn.Module, linear_std: float | None = None, zero_linear_bias: bool = False) -> None:
    """RepDistiller's initialisation.

    Convolutions: normal with std ``sqrt(2 / (k*k*C_out))`` (Kaiming, fan-out, ReLU gain), zero
    bias; BatchNorm: weight 1, bias 0; Linear: normal with ``linear_std`` when given, else
    PyTorch's default, and a zero bias when ``zero_linear_bias``.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if zero_linear_bias:
                nn.init.zeros_(m.bias)
