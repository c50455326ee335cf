"""Scale Decoupled Distillation (SDD, Wei et al. CVPR 2024): SD-KD, SD-DKD, SD-NKD.

Because the classifier is linear, the global logits are the average of per-location logits.
SDD pools the final feature map over a spatial pyramid (:func:`spp`), runs the network's own
classifier on every cell (:func:`patch_logits`) and distils every (teacher cell, student cell)
pair with a logit loss; cells where the teacher's correctness differs from its global
prediction ("complementary") weigh more (:func:`sdd_weights`, :func:`sdd`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._fp32 import fp32
from .logits import dkd_per_sample, kd_per_sample, nkd_per_sample

__all__ = ["spp", "patch_logits", "sdd_weights", "sdd"]

# Per-row base losses, all called as (rows_s, rows_t, target, **hparams).
_BASES = {
    "kd": lambda s, t, target, **hp: kd_per_sample(s, t, **hp),
    "dkd": dkd_per_sample,
    "nkd": nkd_per_sample,
}


@fp32
def spp(fmap: Tensor, scales: tuple[int, ...] = (1, 2, 4)) -> Tensor:
    """Spatial pyramid pooling of a final feature map into ``N = Σ_m m²`` cells.

    For each scale ``m`` the map is average-pooled to ``m×m`` cells, flattened row-major, and
    the scales are concatenated in the given order: ``(1, 2, 4)`` gives N = 1 + 4 + 16 = 21
    with the global cell first. All scales are averaged from one grid of ``lcm(4, *scales)``
    cells adaptively pooled from the map, as SDD pools its 2×2 and 1×1 cells from its 4×4 grid:
    this only matters for maps whose size is not a multiple of the grid (7×7 ImageNet maps);
    a 2×2 map (MobileNetV2) is replicated into the grid, so its 4×4 cells repeat its pixels.

    Args:
        fmap: ``(B, C, H, W)`` the tensor the network globally pools before its classifier.
        scales: pyramid levels; must start with 1 (the SDD weights read cell 0 as global).

    Returns:
        ``(B, C, N)`` cell features. Book: chapter 1 "SDD".
    """
    if not scales or scales[0] != 1:
        raise ValueError(f"scales must start with 1 (the global cell), got {tuple(scales)}")
    grid = F.adaptive_avg_pool2d(fmap, math.lcm(4, *scales))
    return torch.cat([F.adaptive_avg_pool2d(grid, m).flatten(2) for m in scales], dim=2)


@fp32
def patch_logits(fmap: Tensor, classifier: nn.Linear,
                 scales: tuple[int, ...] = (1, 2, 4)) -> Tensor:
    """Logits of every SPP cell from the network's own (shared) final ``nn.Linear``.

    ``P[b, :, n] = W·spp(fmap)[b, :, n] + bias``; cell 0 equals the global logits. SDD adds no
    parameters: the teacher's classifier is frozen, the student's is trained through this too.

    Args:
        fmap: ``(B, C, H, W)`` final feature map; classifier: ``nn.Linear(C, K)``;
        scales: as :func:`spp`.

    Returns:
        ``(B, K, N)`` patch logits (float32). Book: chapter 1 "SDD".
    """
    cells = spp(fmap, scales).transpose(1, 2)
    bias = classifier.bias
    logits = F.linear(cells, classifier.weight.float(), None if bias is None else bias.float())
    return logits.transpose(1, 2)


def sdd_weights(patch_t: Tensor, target: Tensor, complementary_weight: float = 2.0) -> Tensor:
    """SDD's cell weights from the teacher's correctness (constants, no gradient).

    A cell is *consistent* (weight 1) when the teacher is right in it exactly when it is right
    globally (cell 0; so every global cell is consistent), *complementary*
    (``complementary_weight``, 2 in the paper's code) otherwise. Note the code's notion is
    agreement on correctness, not on the predicted class as the paper's text says.

    Args:
        patch_t: ``(B, K, N)`` teacher patch logits; target: ``(B,)`` labels.
        complementary_weight: weight of complementary cells.

    Returns:
        ``(B, N)`` float32 weights. Book: chapter 1 "SDD".
    """
    right = patch_t.argmax(1) == target[:, None]
    return torch.where(right == right[:, :1], 1.0, complementary_weight)


@fp32
def sdd(patch_s: Tensor, patch_t: Tensor, target: Tensor, base: str = "kd",
        complementary_weight: float = 2.0, **base_hparams) -> Tensor:
    """Scale-decoupled loss: ``L = Σ_{b,n} w_{b,n}·ℓ(P_s[b,:,n], P_t[b,:,n], y_b) / (N·B)``.

    ``ℓ`` is the per-sample base loss (:func:`~kdlib.losses.kd_per_sample`,
    :func:`~kdlib.losses.dkd_per_sample` or :func:`~kdlib.losses.nkd_per_sample`) applied to every
    cell as if it were a sample with the image's label, ``w`` are :func:`sdd_weights`. The
    normalisation by N·B (not B) is SDD's. With ``scales=(1,)`` SD-KD is KD and SD-DKD is DKD.
    No CE and no warm-up (SD-KD: ``0.1·CE + 0.9·L``; SD-DKD/SD-NKD: ``CE + min(epoch/20,1)·L``).

    Args:
        patch_s, patch_t: ``(B, K, N)`` from :func:`patch_logits` (teacher detached).
        target: ``(B,)`` int64 labels.
        base: ``"kd"``, ``"dkd"`` or ``"nkd"``.
        complementary_weight: weight of complementary cells (2).
        **base_hparams: passed to the base loss, whose defaults apply otherwise (KD T=4; DKD
            α=1, β=8, T=4; NKD γ=1.5, T=1, drop_target=True). The SDD code's SD-NKD uses
            ``T=4, gamma=<DKD β>, drop_target=False``.

    Returns:
        A scalar. Book: chapter 1 "SDD".
    """
    if base not in _BASES:
        raise ValueError(f"unknown SDD base loss {base!r}; valid: {', '.join(_BASES)}")
    patch_t = patch_t.detach()
    B, K, N = patch_s.shape

    def rows(p):  # (B, K, N) -> (B·N, K), cell n of sample b at row b·N + n
        return p.transpose(1, 2).reshape(B * N, K)

    losses = _BASES[base](rows(patch_s), rows(patch_t), target.repeat_interleave(N), **base_hparams)
    return (sdd_weights(patch_t, target, complementary_weight).flatten() * losses).mean()
