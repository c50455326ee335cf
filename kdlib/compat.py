"""Work-arounds for third-party packages in the pinned environment.

kdlib's core needs no torchvision; this module only helps code that wants its models,
datasets or transforms (e.g. a torchvision network wrapped in a ``FeatureAdapter``).
"""
from __future__ import annotations

import sys
from types import ModuleType

import torch

_MISSING_OP = "operator torchvision::nms does not exist"
# Keeps the operator definitions alive: a Library removes its definitions when collected.
_placeholder_ops: torch.library.Library | None = None


def import_torchvision() -> ModuleType:
    """Import and return ``torchvision``, patching the CPU-torch / CUDA-torchvision mismatch.

    The torchvision 0.28.0 wheel on PyPI is built for CUDA torch. Its compiled extension does
    not load against the CPU build of torch, so the operators it would define (``nms``,
    ``qnms``, ...) are absent, and ``import torchvision`` then fails while registering fake
    kernels for ``torchvision::nms`` ("operator torchvision::nms does not exist"). Declaring the
    schemas of those two operators lets the import finish; datasets, transforms and models work
    (they never call them), while ``torchvision.ops.nms`` and the image decoders stay unusable.

    The patch is applied only when the plain import fails with exactly that error, and only
    once; later calls return the already imported module.

    Raises:
        ImportError: torchvision is not installed.
        RuntimeError: the import fails for another reason.
    """
    global _placeholder_ops
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if _MISSING_OP not in str(e) or _placeholder_ops is not None:
            raise
    # The failed import leaves half-initialised torchvision modules behind; drop them first.
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    _placeholder_ops = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _placeholder_ops.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision
    return torchvision
