"""The float32 guard shared by every loss (every loss computes in fp32, also under autocast)."""
from __future__ import annotations

import functools

import torch
from torch import Tensor


def _float(x):
    """Floating tensors (also inside lists/tuples) cast to float32; anything else unchanged."""
    if isinstance(x, Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_float(v) for v in x)
    return x


def _device_type(x) -> str | None:
    if isinstance(x, Tensor):
        return x.device.type
    if isinstance(x, (list, tuple)):
        return next(filter(None, map(_device_type, x)), None)
    return None


def fp32(fn):
    """Decorator: run ``fn`` with autocast off and its floating tensor arguments in float32.

    Casting alone is not enough: under autocast, matmuls and convolutions of float32 tensors
    would still run in bf16/fp16. Integer tensors (labels), modules and other values pass
    through unchanged; lists of tensors are cast element-wise.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args, kwargs = _float(args), {k: _float(v) for k, v in kwargs.items()}
        device = _device_type(args) or _device_type(list(kwargs.values())) or "cpu"
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)
    return wrapper
