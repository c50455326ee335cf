"""Relational losses: SP, CC, RKD and PKT (as benchmarked by RepDistiller/CRD), and ITRD's two
information-theoretic terms (chapter 5).

They transfer how samples of a batch relate to each other (similarities, distances, angles,
probability kernels) rather than the samples' own outputs, so teacher and student features
may have different widths. Teacher inputs are detached (except in :func:`cc`, see there);
everything runs in float32 with autocast off.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._fp32 import fp32

__all__ = ["sp", "cc", "rkd", "pkt", "itrd_correlation", "itrd_mutual"]


def _row_normalised_gram(f: Tensor) -> Tensor:
    f = f.flatten(1)
    return F.normalize(f @ f.T, dim=1)


@fp32
def sp(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori 2019): ``L = ‖G_t − G_s‖²_F / B²``.

    ``G = F Fᵀ`` is the ``B×B`` Gram matrix of the flattened features with each row
    L2-normalised.

    Args:
        f_s, f_t: ``(B, ...)`` student and teacher features (RepDistiller: the last stage map,
            ``feats[-2]``); shapes beyond the batch axis may differ (teacher detached).

    Returns:
        A scalar (mean over the B² entries). Book: chapter 3 "DCD and RRD" (a baseline).
    """
    return (_row_normalised_gram(f_t.detach()) - _row_normalised_gram(f_s)).pow(2).mean()


@fp32
def cc(e_s: Tensor, e_t: Tensor) -> Tensor:
    """Correlation congruence (Peng et al. 2019), RepDistiller's neighbour approximation.

    ``δ = |e_s − e_t|``, ``L = mean_{i<B−1} Σ_d δ_{i,d}·δ_{i+1,d}`` (consecutive samples only).
    Unlike the other losses, ``e_t`` is NOT detached: in CC both embeddings are trainable
    ``nn.Linear`` layers (the teacher's too); the caller detaches the teacher's features
    before its embedding.

    Args:
        e_s, e_t: ``(B, D)`` embeddings of the pooled features (D = 128).

    Returns:
        A scalar. Book: chapter 3 "DCD and RRD" (a baseline).
    """
    delta = (e_s - e_t).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


def _normalised_distances(x: Tensor) -> Tensor:
    """Pairwise Euclidean distances divided by their mean over the B(B−1) off-diagonal pairs."""
    n = len(x)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)
    # The clamp keeps sqrt differentiable at the (zeroed) diagonal.
    d = (x[:, None] - x[None]).pow(2).sum(-1).clamp(min=1e-12).sqrt() * off_diagonal
    return d / (d.sum() / (n * (n - 1)))


def _angles(x: Tensor) -> Tensor:
    """``A[i, j, k] = cos∠(x_j − x_i, x_k − x_i)`` for all triplets (0 when j or k is i)."""
    e = F.normalize(x[None] - x[:, None], dim=2)
    return e @ e.transpose(1, 2)


@fp32
def rkd(f_s: Tensor, f_t: Tensor, w_d: float = 25.0, w_a: float = 50.0) -> Tensor:
    """Relational KD (Park et al. 2019): ``L = w_d·L_dist + w_a·L_angle``.

    ``L_dist`` = smooth-L1 (β=1, mean over B²) between the pairwise distance matrices, each
    divided by its mean off-diagonal distance; ``L_angle`` = smooth-L1 (mean over B³) between
    the cosines of all triplet angles.

    Args:
        f_s, f_t: ``(B, D_s)``, ``(B, D_t)`` pooled features (teacher detached).
        w_d, w_a: 25 and 50.

    Returns:
        A scalar. Book: chapter 3 "DCD and RRD" (a baseline).
    """
    f_s, f_t = f_s.flatten(1), f_t.detach().flatten(1)
    distance = F.smooth_l1_loss(_normalised_distances(f_s), _normalised_distances(f_t))
    angle = F.smooth_l1_loss(_angles(f_s), _angles(f_t))
    return w_d * distance + w_a * angle


_PKT_EPS = 1e-7


def _cosine_kernel(f: Tensor) -> Tensor:
    """Cosine similarities mapped to [0, 1] by ``(c+1)/2``, each row normalised to sum to 1."""
    f = f.flatten(1)
    f = f / (f.norm(dim=1, keepdim=True) + _PKT_EPS)
    k = (f @ f.T + 1) / 2
    return k / k.sum(1, keepdim=True)


@fp32
def pkt(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas 2018).

    With rows L2-normalised (``f/(‖f‖ + ε)``), ``P = (f fᵀ + 1)/2`` (cosines mapped to [0, 1])
    with each row normalised to sum to 1, and ε = 1e-7:
    ``L = mean_{i,j} P_t,ij·log((P_t,ij + ε)/(P_s,ij + ε))``, a mean over all B² entries, not a
    sum (as RepDistiller, whose training weight 30000 assumes it).

    Args:
        f_s, f_t: ``(B, D_s)``, ``(B, D_t)`` pooled features (teacher detached).

    Returns:
        A scalar. Book: chapter 3 "DCD and RRD" (a baseline).
    """
    p_s, p_t = _cosine_kernel(f_s), _cosine_kernel(f_t.detach())
    return (p_t * torch.log((p_t + _PKT_EPS) / (p_s + _PKT_EPS))).mean()


_FLAT = 1e-12  # a per-dimension std below this is a constant dimension (no correlation)


@fp32
def itrd_correlation(z_s: Tensor, f_t: Tensor, alpha: float = 1.5) -> Tensor:
    """ITRD's correlation term (Miles et al., BMVC 2022): ``log2 Σ_d |c_d − 1|^(2α)``.

    Both features are standardised per dimension over the batch (mean 0, unbiased std 1);
    ``c_d = (1/B) Σ_b ẑ_{b,d} f̂_{b,d}`` is the correlation of dimension ``d`` between the
    student's embedded and the teacher's features. The loss drives every ``c_d`` to 1 (the
    student's dimension d moves with the teacher's); α (Rényi's order) sharpens the penalty
    on the dimensions that lag most. A dimension that is constant over the batch (a ReLU unit
    that is zero for every image, common in pooled VGG features) has no correlation: it counts
    as ``c_d = 0`` and carries no gradient, where the original code's ``0/0`` makes the whole
    loss NaN; elsewhere the value is the original's.

    Args:
        z_s: ``(B, D)`` the student's features embedded to the teacher's width (ITRD's
            ``Linear(d_s, d_t)``).
        f_t: ``(B, D)`` the teacher's pooled features (detached).
        alpha: Rényi's α (the TTM repository: 1.01 for same-architecture pairs, 1.5 otherwise).

    Returns:
        A scalar. Book: chapter 5 "TTM and WTTM" (WTTM+ITRD).
    """
    f_t = f_t.detach()
    b = z_s.shape[0]
    zs = (z_s - z_s.mean(0)) / z_s.std(0).clamp_min(_FLAT)
    ft = (f_t - f_t.mean(0)) / f_t.std(0).clamp_min(_FLAT)
    c = (zs * ft).sum(0) / b
    return torch.log2((c - 1).abs().pow(2 * alpha).sum())


@fp32
def itrd_mutual(z_s: Tensor, f_t: Tensor) -> Tensor:
    """ITRD's mutual-information term: ``Σ (G_s / tr G_s)² − (G_st / tr G_st)²``.

    ``G_s``, ``G_t`` are the ``B×B`` Gram matrices of the L2-normalised rows and
    ``G_st = G_s ⊙ G_t`` their joint (Hadamard) kernel; with Rényi's matrix entropy of order 2,
    ``Σ Ĝ²`` is the exponential of minus the entropy, so the loss is
    ``exp(−H₂(Ĝ_s)) − exp(−H₂(Ĝ_st))``: minimising it raises the joint entropy against the
    student's own, i.e. the information the student's batch geometry shares with the teacher's.

    Args:
        z_s: ``(B, D)`` the student's features, embedded to the teacher's width only when the
            widths differ (as the original code does).
        f_t: ``(B, D_t)`` the teacher's pooled features (detached).

    Returns:
        A scalar. Book: chapter 5 "TTM and WTTM" (WTTM+ITRD).
    """
    zs, ft = F.normalize(z_s, dim=1), F.normalize(f_t.detach(), dim=1)
    g_s = zs @ zs.T
    g_st = g_s * (ft @ ft.T)
    return ((g_s / torch.trace(g_s)).pow(2) - (g_st / torch.trace(g_st)).pow(2)).sum()
