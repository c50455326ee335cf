"""Contrastive and relational representation losses of chapter 3 "DCD and RRD".

:class:`CRD` (the memory-bank NCE of RepDistiller, with :func:`nce_loss` usable alone) is the
reference point; :class:`DCD` (in-batch InfoNCE + consistency) and :class:`RRD` (relations to a
FIFO queue of teacher embeddings) follow the distillers code at ``129aa3b`` (Nov 2024). All
three project pooled features with :class:`Embed` (Linear + L2 normalisation) and compute in
float32 (``exp(s/0.07)`` overflows half precision). Student side first, teacher side second;
teacher features are detached. Loss weights of the training scripts are not applied here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._fp32 import fp32

__all__ = ["Embed", "nce_loss", "CRD", "dcd_loss", "DCD", "RRD"]


class Embed(nn.Module):
    """Projection head of CRD, DCD and RRD (chapter 3 "DCD and RRD"): ``normalize_L2(Linear(x))``.

    Args: ``in_dim`` (pooled feature size), ``out_dim`` (128). ``(B, in_dim) -> (B, out_dim)``
    unit rows, in float32 (inputs are flattened from dim 1). The layer is ``linear``
    (RepDistiller's ``state_dict`` names; distillers' DCD/RRD keys lack the ``linear.``).
    """

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    @fp32
    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


# --------------------------------------------------------------------------- CRD

@fp32
def nce_loss(scores: Tensor, n_data: int, eps: float = 1e-7) -> Tensor:
    """CRD's NCE loss (chapter 3 "DCD and RRD"; RepDistiller ``ContrastLoss``, CRD Eq. 18).

    With ``K`` negatives, noise probability ``P_n = 1/n_data`` and ``c = K·P_n``:
    ``loss = -(1/B) Σ_b [log(x_b0 / (x_b0 + c + eps)) + Σ_{j≥1} log(c / (x_bj + c + eps))]``.

    Args:
        scores: ``(B, K+1)`` positive scores ``x = exp(sim/T)/Z``, column 0 the positive.
        n_data: size of the training set (the memory bank).
        eps: 1e-7.

    Returns:
        Scalar: sum over the batch and the K+1 terms, divided by B.
    """
    c = (scores.shape[1] - 1) / n_data
    pos, neg = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(pos / (pos + c + eps))
    log_d0 = torch.log(c / (neg + c + eps))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


class CRD(nn.Module):
    """Contrastive representation distillation (chapter 3 "DCD and RRD", the reference point).

    ``u = Embed_s(f_s)``, ``v = Embed_t(f_t)`` (both heads trained). Two memory banks hold one
    unit vector per training sample: ``memory_s`` (student embeddings) and ``memory_t``
    (teacher). For contrast indices ``idx ∈ Z^{B×(K+1)}`` (column 0 the sample itself, then K
    samples of other classes):
    ``out_s[b, j] = exp(⟨memory_t[idx_bj], u_b⟩ / T) / Z_s`` (student-anchored) and
    ``out_t[b, j] = exp(⟨memory_s[idx_bj], v_b⟩ / T) / Z_t`` (teacher-anchored);
    ``Z = mean(exp-scores) · n_data`` is fixed by the first batch.
    ``loss = nce_loss(out_s) + nce_loss(out_t)``. After the scores the banks are updated at the
    batch indices: ``memory[i] <- normalize(m·memory[i] + (1-m)·embedding_i)``.

    Negatives are drawn on the labels' device, uniformly without replacement from the samples
    of other classes (RepDistiller's "exact" sampling of its dataset), unless given.

    Args:
        s_dim, t_dim: pooled feature sizes of student and teacher.
        labels: ``(n_data,)`` int class of every training sample (indexed like the dataset).
        feat_dim: embedding size (128).
        K: negatives per anchor (16384).
        T: temperature (0.07).
        momentum: memory momentum m (0.5).

    State (buffers, saved in ``state_dict`` so a resumed run continues exactly): ``memory_s``,
    ``memory_t`` ``(n_data, feat_dim)``, initialised U(-a, a) with ``a = 1/sqrt(feat_dim/3)``;
    ``Z = [Z_s, Z_t]``, negative until the first step. ``labels`` moves with the module but is
    not saved.
    """

    def __init__(self, s_dim: int, t_dim: int, labels: Tensor, feat_dim: int = 128,
                 K: int = 16384, T: float = 0.07, momentum: float = 0.5):
        super().__init__()
        labels = torch.as_tensor(labels, dtype=torch.long)
        fewest_negatives = len(labels) - int(torch.bincount(labels).max())
        if K > fewest_negatives:
            raise ValueError(f"K={K} negatives requested but some class has only "
                             f"{fewest_negatives} samples of other classes")
        self.embed_s, self.embed_t = Embed(s_dim, feat_dim), Embed(t_dim, feat_dim)
        self.n_data, self.K, self.T, self.momentum = len(labels), K, T, momentum
        bound = 1 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.empty(self.n_data, feat_dim).uniform_(-bound, bound))
        self.register_buffer("memory_t", torch.empty(self.n_data, feat_dim).uniform_(-bound, bound))
        self.register_buffer("Z", torch.full((2,), -1.0))
        self.register_buffer("labels", labels.clone(), persistent=False)

    def sample_contrast(self, idx: Tensor) -> Tensor:
        """``(B,)`` sample indices -> ``(B, K+1)``: the index, then K distinct other-class samples.

        Uniform random keys with the same-class entries pushed past every other key; the K
        smallest keys are a uniform sample without replacement. All on the labels' device.
        """
        idx = idx.to(self.labels.device)
        keys = torch.rand(len(idx), self.n_data, device=self.labels.device)
        keys.masked_fill_(self.labels[None, :] == self.labels[idx][:, None], 2.0)
        negatives = keys.topk(self.K, dim=1, largest=False).indices
        return torch.cat([idx[:, None], negatives], dim=1)

    def scores(self, u: Tensor, v: Tensor, contrast_idx: Tensor) -> tuple[Tensor, Tensor]:
        """Unnormalised ``exp(⟨memory row, embedding⟩/T)``, ``(B, K+1)`` each: student-, teacher-anchored.

        Similarities to the whole bank, then gathered: ``B×n_data`` values instead of the
        ``B×(K+1)×d`` rows the reference gathers (about 0.5 GB per bank at CIFAR defaults).
        """
        o_s = (u @ self.memory_t.t()).gather(1, contrast_idx)
        o_t = (v @ self.memory_s.t()).gather(1, contrast_idx)
        return torch.exp(o_s / self.T), torch.exp(o_t / self.T)

    @torch.no_grad()
    def _update_memory(self, u: Tensor, v: Tensor, idx: Tensor) -> None:
        for name, emb in (("memory_s", u), ("memory_t", v)):
            memory = getattr(self, name)
            mixed = memory[idx] * self.momentum + emb * (1 - self.momentum)
            # out of place: this step's backward still needs the old bank
            setattr(self, name, memory.index_copy(0, idx, F.normalize(mixed, dim=1)))

    @fp32
    def forward(self, f_s: Tensor, f_t: Tensor, idx: Tensor, contrast_idx: Tensor | None = None) -> Tensor:
        """Scalar CRD loss for pooled ``f_s (B, s_dim)``, ``f_t (B, t_dim)`` and sample indices
        ``idx (B,)`` (distinct within the batch); ``contrast_idx (B, K+1)`` overrides the sampler.
        Updates ``Z`` (first call only) and both memories."""
        u, v = self.embed_s(f_s), self.embed_t(f_t.detach())
        if contrast_idx is None:
            contrast_idx = self.sample_contrast(idx)
        o_s, o_t = self.scores(u, v, contrast_idx)
        # set Z once, without a host sync: keep the stored value where it is already positive
        first = torch.stack([o_s.mean(), o_t.mean()]).detach() * self.n_data
        z = torch.where(self.Z > 0, self.Z, first)
        self.Z.copy_(z)
        self._update_memory(u.detach(), v.detach(), idx)
        return nce_loss(o_s / z[0], self.n_data) + nce_loss(o_t / z[1], self.n_data)


# --------------------------------------------------------------------------- DCD

@fp32
def dcd_loss(logits: Tensor, alpha: float = 0.5) -> Tensor:
    """DCD objective on a ``(B, B)`` similarity-logit matrix (chapter 3 "DCD and RRD").

    Row i holds student i against every teacher of the batch, the diagonal the positives.
    ``L_con = mean_i CE(Λ_i, i)``; ``P1 = log_softmax(Λ, dim=1)``,
    ``P2 = softmax(Λ, dim=0)ᵀ`` (teacher-anchored, not detached);
    ``L_cons = KL(P2 ‖ exp P1)`` summed and divided by B (batchmean).
    ``loss = L_con + alpha · L_cons``. Adding a constant to every logit changes nothing.
    """
    log_p1 = F.log_softmax(logits, dim=1)
    log_p2 = F.log_softmax(logits, dim=0).t()
    target = torch.arange(len(logits), device=logits.device)
    consistency = F.kl_div(log_p1, log_p2, reduction="batchmean", log_target=True)
    return F.nll_loss(log_p1, target) + alpha * consistency


class DCD(nn.Module):
    """Discriminative and consistent distillation (chapter 3 "DCD and RRD").

    ``u = Embed_s(f_s)``, ``v = Embed_t(f_t)`` (both heads trained; teacher features detached),
    ``Λ = min(e^τ, max_tau) · u vᵀ + b`` (B×B, in-batch negatives only), ``loss = dcd_loss(Λ, alpha)``.
    τ (a log-scale) and b are learnable scalars; b is inert (∂L/∂b = 0, both softmaxes ignore a
    shared shift) and τ's gradient vanishes once the clamp is active.

    Args:
        s_dim, t_dim: pooled feature sizes.
        feat_dim: embedding size (128).
        alpha: weight of the consistency term (0.5).
        tau: initial log-scale (1.0, scale e ≈ 2.72).
        max_tau: cap on the scale e^τ (10).

    ``forward(f_s (B, s_dim), f_t (B, t_dim))`` -> scalar (CE mean + α·KL batchmean).
    """

    def __init__(self, s_dim: int, t_dim: int, feat_dim: int = 128, alpha: float = 0.5,
                 tau: float = 1.0, max_tau: float = 10.0):
        super().__init__()
        self.embed_s, self.embed_t = Embed(s_dim, feat_dim), Embed(t_dim, feat_dim)
        self.tau = nn.Parameter(torch.tensor(float(tau)))
        self.b = nn.Parameter(torch.tensor(0.0))
        self.alpha, self.max_tau = alpha, max_tau

    @fp32
    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        u, v = self.embed_s(f_s), self.embed_t(f_t.detach())
        logits = self.tau.exp().clamp(max=self.max_tau) * (u @ v.t()) + self.b
        return dcd_loss(logits, self.alpha)


# --------------------------------------------------------------------------- RRD

class RRD(nn.Module):
    """Relational representation distillation (chapter 3 "DCD and RRD").

    ``u = Embed_s(f_s)``, ``v = Embed_t(f_t)``; with a FIFO queue ``Q (K, feat_dim)`` of past
    teacher embeddings, ``A_s = u Qᵀ``, ``A_t = v Qᵀ`` (B×K) and
    ``loss = -mean_b Σ_k softmax(A_t,b / tau_t)_k · log softmax(A_s,b / tau_s)_k``
    (teacher relations are the constant target; the student's distribution is the sharper one).
    ``Embed_t`` gets no gradient at all, as in the reference: it stays a fixed random projection.
    Then ``v`` is written at the queue pointer, which advances by B (mod K).

    Args:
        s_dim, t_dim: pooled feature sizes.
        feat_dim: embedding size (128).
        K: queue length (16384).
        tau_s: student temperature (0.04, the 2024 code; distillers HEAD's argparse uses 0.1).
        tau_t: teacher temperature (0.10; HEAD: 0.02).
        enqueue: ``"after"`` (2024 code, the published tables: relations to the queue before this
            batch) or ``"before"`` (distillers HEAD: the batch's own teacher keys are enqueued
            first, so each row's positive is among the K anchors).

    State (buffers): ``queue`` (K, feat_dim), initialised like the reference with N(0, 1)
    entries normalised along the queue axis (unit columns; rows are replaced by unit teacher
    embeddings within K/B steps), and ``queue_ptr`` (1,) int64.
    ``forward(f_s (B, s_dim), f_t (B, t_dim))`` -> scalar, mean over the batch.
    """

    def __init__(self, s_dim: int, t_dim: int, feat_dim: int = 128, K: int = 16384,
                 tau_s: float = 0.04, tau_t: float = 0.10, enqueue: str = "after"):
        super().__init__()
        if enqueue not in ("after", "before"):
            raise ValueError(f"enqueue must be 'after' or 'before', got {enqueue!r}")
        self.embed_s, self.embed_t = Embed(s_dim, feat_dim), Embed(t_dim, feat_dim)
        self.tau_s, self.tau_t, self.enqueue = tau_s, tau_t, enqueue
        self.register_buffer("queue", F.normalize(torch.randn(K, feat_dim), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        k = len(self.queue)
        if len(keys) > k:
            raise ValueError(f"a batch of {len(keys)} does not fit a queue of K={k}")
        slots = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % k
        # out of place: this step's backward still needs the old queue
        self.queue = self.queue.index_copy(0, slots, keys)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % k)

    @fp32
    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        u = self.embed_s(f_s)
        with torch.no_grad():
            v = self.embed_t(f_t)
        if self.enqueue == "before":
            self._enqueue(v)
        target = F.softmax(v @ self.queue.t() / self.tau_t, dim=1)
        loss = -(target * F.log_softmax(u @ self.queue.t() / self.tau_s, dim=1)).sum(1).mean()
        if self.enqueue == "after":
            self._enqueue(v)
        return loss
