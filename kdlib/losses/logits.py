"""Losses on logits: KD, DKD, NKD, GKD, TTM, WTTM and DIST.

Notation: ``z_s, z_t`` student/teacher logits ``(B, K)``, ``y`` labels ``(B,)``,
``σ`` softmax over classes, ``KL(p‖q) = Σ_c p_c (log p_c − log q_c)`` with ``0·log 0 = 0``.
Teacher inputs are detached. Every loss runs in float32 with autocast off (see :func:`fp32`).
Each ``*_per_sample`` function returns the unreduced ``(B,)`` losses; the batch losses are
their means, so methods that weight or select rows (SDD, SSKD, GKD) reuse them.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from ._fp32 import fp32

__all__ = [
    "kd", "kd_per_sample", "dkd", "dkd_per_sample", "nkd", "nkd_per_sample", "gkd",
    "ttm", "ttm_per_sample", "wttm", "dist",
]


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the rows where ``mask`` is true; 0 with zero gradient if none is.

    Computed without boolean indexing, so it never synchronises a GPU with the host.
    """
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _kl(log_q: Tensor, p: Tensor) -> Tensor:
    """Row-wise ``KL(p‖q)`` from probabilities ``p`` and log-probabilities ``log q``."""
    return F.kl_div(log_q, p, reduction="none").sum(-1)


def _target_mask(logits: Tensor, target: Tensor) -> Tensor:
    return F.one_hot(target, logits.shape[-1]).bool()


def _probs_without(z: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the classes outside ``mask`` (probability 0 inside)."""
    return F.softmax(z.masked_fill(mask, float("-inf")), -1)


def _log_probs_without(z: Tensor, mask: Tensor) -> Tensor:
    """Log-softmax over the classes outside ``mask``; 0 inside (not −inf: ``0·log q`` stays 0)."""
    return F.log_softmax(z.masked_fill(mask, float("-inf")), -1).masked_fill(mask, 0.0)


@fp32
def kd_per_sample(logits_s: Tensor, logits_t: Tensor, T: float = 4.0) -> Tensor:
    """Per-sample KD (Hinton et al.): ``ℓ_b = T²·KL(σ(z_t,b/T) ‖ σ(z_s,b/T))``.

    Args:
        logits_s, logits_t: ``(B, K)`` student and teacher logits (teacher detached).
        T: temperature (4 on CIFAR-100).

    Returns:
        ``(B,)`` losses, unreduced. Book: chapter 0 "Foundations".
    """
    p_t = F.softmax(logits_t.detach() / T, -1)
    return T**2 * _kl(F.log_softmax(logits_s / T, -1), p_t)


@fp32
def kd(logits_s: Tensor, logits_t: Tensor, T: float = 4.0) -> Tensor:
    """Knowledge distillation: ``T²·Σ_b KL(σ(z_t,b/T) ‖ σ(z_s,b/T)) / B`` (batchmean).

    The T² keeps the gradient scale independent of T. Equals RepDistiller's ``DistillKL`` and
    mdistiller's ``kd_loss``. Args as :func:`kd_per_sample`; returns a scalar.
    Book: chapter 0 "Foundations".
    """
    return kd_per_sample(logits_s, logits_t, T).mean()


@fp32
def dkd_per_sample(logits_s: Tensor, logits_t: Tensor, target: Tensor,
                   alpha: float = 1.0, beta: float = 8.0, T: float = 4.0) -> Tensor:
    """Per-sample decoupled KD: ``ℓ_b = T²·(α·TCKD_b + β·NCKD_b)``.

    With ``p = σ(z/T)``: TCKD = KL between the binary distributions ``[p_y, Σ_{c≠y} p_c]`` of
    teacher and student; NCKD = KL between the teacher's and the student's softmaxes over the
    non-target classes only (mdistiller pushes the target logit to −1000; here it is removed
    exactly). No CE and no warm-up factor (the method applies ``min(epoch/20, 1)``).

    Args:
        logits_s, logits_t: ``(B, K)`` (teacher detached); target: ``(B,)`` int64 labels.
        alpha, beta, T: CIFAR-100 defaults 1, 8 (6 or 2 for some pairs), 4.

    Returns:
        ``(B,)`` losses, unreduced. Book: chapter 0 "Foundations".
    """
    logits_t = logits_t.detach()
    gt = _target_mask(logits_s, target)

    def binary(p):
        return torch.stack([(p * gt).sum(-1), p.masked_fill(gt, 0.0).sum(-1)], -1)

    p_s, p_t = F.softmax(logits_s / T, -1), F.softmax(logits_t / T, -1)
    tckd = _kl(binary(p_s).log(), binary(p_t))
    nckd = _kl(_log_probs_without(logits_s / T, gt), _probs_without(logits_t / T, gt))
    return T**2 * (alpha * tckd + beta * nckd)


@fp32
def dkd(logits_s: Tensor, logits_t: Tensor, target: Tensor,
        alpha: float = 1.0, beta: float = 8.0, T: float = 4.0) -> Tensor:
    """Decoupled KD (Zhao et al. 2022): batch mean of :func:`dkd_per_sample`, a scalar.

    ``L = T²·(α·TCKD + β·NCKD)`` averaged over the batch, as mdistiller's ``dkd_loss``; without
    the CE term and the warm-up. Book: chapter 0 "Foundations".
    """
    return dkd_per_sample(logits_s, logits_t, target, alpha, beta, T).mean()


@fp32
def nkd_per_sample(logits_s: Tensor, logits_t: Tensor, target: Tensor, gamma: float = 1.5,
                   T: float = 1.0, drop_target: bool = True) -> Tensor:
    """Per-sample normalised KD: ``ℓ_b = −p_t,y·log q_y − γT²·Σ_{c∈C'} p̃^T_t,c·log q̃^T_s,c``.

    The target term uses ``p = σ(z_t)``, ``q = σ(z_s)`` at T = 1; the second term softmaxes
    ``z/T`` over the classes ``C'``. ``drop_target=True`` is the original NKD (cls_KD): ``C'``
    excludes the target and both softmaxes are renormalised over the K−1 others.
    ``drop_target=False`` reproduces the SDD repository, whose mask bug keeps every class
    (the second term is then a T²-scaled cross-entropy over all K classes).

    Args:
        logits_s, logits_t: ``(B, K)`` (teacher detached); target: ``(B,)`` int64 labels.
        gamma, T: NKD's ImageNet values 1.5 and 1 (SD-NKD uses T=4 and γ=DKD's β).
        drop_target: see above.

    Returns:
        ``(B,)`` losses, unreduced. Book: chapter 1 "SDD".
    """
    logits_t = logits_t.detach()
    y = target[:, None]
    p_t_y = F.softmax(logits_t, -1).gather(-1, y).squeeze(-1)
    log_q_y = F.log_softmax(logits_s, -1).gather(-1, y).squeeze(-1)
    excluded = _target_mask(logits_s, target)
    if not drop_target:
        excluded = torch.zeros_like(excluded)
    p_t = _probs_without(logits_t / T, excluded)
    cross = (p_t * _log_probs_without(logits_s / T, excluded)).sum(-1)
    return -p_t_y * log_q_y - gamma * T**2 * cross


@fp32
def nkd(logits_s: Tensor, logits_t: Tensor, target: Tensor, gamma: float = 1.5,
        T: float = 1.0, drop_target: bool = True) -> Tensor:
    """Normalised KD (Yang et al. 2023): batch mean of :func:`nkd_per_sample`, a scalar.

    ``drop_target=False`` is the SDD repository's variant (target class kept by a mask bug).
    Book: chapter 1 "SDD".
    """
    return nkd_per_sample(logits_s, logits_t, target, gamma, T, drop_target).mean()


@fp32
def gkd(logits_s: Tensor, logits_t: Tensor, target: Tensor, T: float = 1.0) -> Tensor:
    """Guided KD (CD paper): KD on the samples the teacher classifies correctly.

    ``L = T²·Σ_b m_b·KL(σ(z_t,b/T) ‖ σ(z_s,b/T)) / Σ_b m_b`` with ``m_b = [argmax z_t,b = y_b]``.
    When the teacher is wrong on every sample, ``L = 0`` with a zero gradient (the reference
    divides 0 by 0 and returns NaN).

    Args:
        logits_s, logits_t: ``(B, K)`` (teacher detached); target: ``(B,)`` int64 labels.
        T: temperature, 1 in every CD configuration.

    Returns:
        A scalar. Book: chapter 2 "CD".
    """
    right = logits_t.argmax(-1) == target
    return masked_mean(kd_per_sample(logits_s, logits_t, T), right)


@fp32
def ttm_per_sample(logits_s: Tensor, logits_t: Tensor, gamma: float) -> Tensor:
    """Per-sample transformed teacher matching: ``ℓ_b = KL(p̂_b ‖ σ(z_s,b))``.

    ``p̂ = p_t^γ / Σ_c p_t,c^γ`` with ``p_t = σ(z_t)`` (the power transform, equal to
    ``σ(γ·z_t)``, i.e. the teacher at temperature 1/γ); the student has no temperature and
    there is no T² factor.

    Args:
        logits_s, logits_t: ``(B, K)`` (teacher detached). gamma: γ ∈ (0, 1], per pair (0.1–0.4).

    Returns:
        ``(B,)`` losses, unreduced. Book: chapter 5 "TTM and WTTM".
    """
    p_hat = F.softmax(gamma * F.log_softmax(logits_t.detach(), -1), -1)
    return _kl(F.log_softmax(logits_s, -1), p_hat)


@fp32
def ttm(logits_s: Tensor, logits_t: Tensor, gamma: float) -> Tensor:
    """Transformed teacher matching (Zheng & Yang 2024): ``mean_b KL(p̂_b ‖ σ(z_s,b))``, a scalar.

    See :func:`ttm_per_sample`. Book: chapter 5 "TTM and WTTM".
    """
    return ttm_per_sample(logits_s, logits_t, gamma).mean()


@fp32
def wttm(logits_s: Tensor, logits_t: Tensor, gamma: float) -> Tensor:
    """Weighted TTM: ``mean_b U_b·KL(p̂_b ‖ σ(z_s,b))`` with ``U_b = Σ_c σ(z_t,b)_c^γ``, a scalar.

    ``U`` (the power sum of the untransformed teacher) is 1 for a one-hot teacher and up to
    ``K^{1−γ}`` for a uniform one, so uncertain teachers weigh more. No T², no student
    temperature. Args as :func:`ttm_per_sample`. Book: chapter 5 "TTM and WTTM".
    """
    power_sum = torch.logsumexp(gamma * F.log_softmax(logits_t.detach(), -1), -1).exp()
    return (power_sum * ttm_per_sample(logits_s, logits_t, gamma)).mean()


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of matching rows (cosine of the centred rows, ``+eps`` below)."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


@fp32
def dist(logits_s: Tensor, logits_t: Tensor, beta: float = 1.0, gamma: float = 1.0,
         tau: float = 4.0) -> Tensor:
    """DIST (Huang et al. 2022): match correlations instead of probabilities.

    With ``Y = σ(z/τ)`` (``B×K``): inter = ``1 − mean_b ρ(Y_s[b,:], Y_t[b,:])`` (per sample,
    across classes), intra = ``1 − mean_k ρ(Y_s[:,k], Y_t[:,k])`` (per class, across the
    batch), ρ the Pearson correlation; ``L = τ²·(β·inter + γ·intra)``.

    Args:
        logits_s, logits_t: ``(B, K)`` (teacher detached). beta, gamma, tau: 1, 1, 4.

    Returns:
        A scalar (the intra term couples the samples, so there is no per-sample form).
        Book: chapter 5 "TTM and WTTM" (a baseline).
    """
    y_s, y_t = F.softmax(logits_s / tau, -1), F.softmax(logits_t.detach() / tau, -1)
    inter = 1 - _pearson_rows(y_s, y_t).mean()
    intra = 1 - _pearson_rows(y_s.T, y_t.T).mean()
    return tau**2 * (beta * inter + gamma * intra)
