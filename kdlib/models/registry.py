"""Model registry: ``create_model(name)`` and ``list_models()`` (timm-style)."""
from __future__ import annotations

import functools
from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a constructor ``fn(num_classes, in_channels) -> nn.Module`` under its
    name. The models it builds carry that name as ``model.arch`` (see :func:`arch_of`)."""
    @functools.wraps(fn)
    def build(*args, **kwargs) -> nn.Module:
        model = fn(*args, **kwargs)
        model.arch = fn.__name__
        return model

    _MODELS[fn.__name__] = build
    return build


def arch_of(model: nn.Module | None) -> str | None:
    """The zoo name of ``model`` (``"MobileNetV2"``...), or ``None`` for a network built
    elsewhere (a :class:`FeatureAdapter` around torchvision's, say). The trainer's learning-rate
    rule and the methods' per-architecture choices read it, so they never depend on an
    optional argument."""
    return getattr(model, "arch", None)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (RepDistiller's names), sorted."""
    return sorted(_MODELS, key=str.lower)


def create_model(name: str, num_classes: int = 100, in_channels: int = 3) -> nn.Module:
    """Build a zoo model by RepDistiller name.

    Args:
        name: e.g. ``"resnet32x4"``, ``"wrn_40_2"``, ``"MobileNetV2"`` (see :func:`list_models`).
        num_classes: K, the classifier's output size.
        in_channels: 3 for CIFAR, 1 for Fashion-MNIST.

    Returns:
        an ``nn.Module`` whose ``forward(x)`` maps ``(B, in_channels, 32, 32)`` to logits
        ``(B, num_classes)`` and which has ``forward_features`` and ``classifier``.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or bad sizes.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not (isinstance(in_channels, int) and in_channels >= 1):
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels)
