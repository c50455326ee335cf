"""SSKD (Xu et al. ECCV 2020): knowledge distillation meets self-supervision.

Every image enters both networks four times, rotated by 0°, 90°, 180° and 270°; a batch of B
images is ``4B`` rows ordered image-major (row ``4b + r`` is rotation ``r`` of image ``b``,
``r = 0`` the unrotated one). A projection head (:class:`SSKDHead`) on the pooled features
embeds each row; the ``3B×B`` cosine similarities between rotated and unrotated embeddings
form a self-supervised task whose answers the student learns from the teacher (:func:`sskd`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._fp32 import fp32
from .logits import kd, kd_per_sample, masked_mean

__all__ = ["SSKDHead", "SSKDTerms", "sskd", "sskd_head_accuracy", "sskd_head_loss"]


class SSKDHead(nn.Sequential):
    """SSKD's projection head: ``Linear(d, d) → ReLU → Linear(d, d)``, no normalisation.

    Applied to the pooled feature (the classifier's input) of every one of the 4B rows. The
    teacher's head is trained first with :func:`sskd_head_loss` on the frozen teacher (60
    epochs) and then frozen; the student's is trained jointly with the student.

    Args:
        dim: d, the pooled feature width (``classifier.in_features``).
    """

    def __init__(self, dim: int):
        super().__init__(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


@dataclass
class SSKDTerms:
    """The four unweighted SSKD terms (scalars) and the rows kept by selective transfer.

    The paper's total is ``0.1·ce + 0.9·kd + 2.7·tf + 10·ss``.

    Attributes:
        ce: cross-entropy on the unrotated rows.
        kd: KD on the unrotated rows.
        tf: KD on the kept rotated rows (the "transformation" term).
        ss: KD between the kept rows of the teacher's and student's similarity matrices.
        keep_tf, keep_ss: ``(3B,)`` bool masks over the rotated rows (image-major,
            ``3b + r − 1``); ``mask.nonzero()`` gives the kept indices. Masks rather than
            indices, so nothing synchronises a GPU with the host.
    """

    ce: Tensor
    kd: Tensor
    tf: Tensor
    ss: Tensor
    keep_tf: Tensor
    keep_ss: Tensor


def _split_rotations(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(4B, ...)`` image-major rows -> unrotated ``(B, ...)`` and rotated ``(3B, ...)``."""
    x = x.unflatten(0, (-1, 4))
    return x[:, 0], x[:, 1:].flatten(0, 1)


def _rotation_similarity(proj: Tensor) -> Tensor:
    """``S[i, j] = cos(rotated row i, unrotated image j)``, ``(3B, B)``; row i shows image ⌊i/3⌋."""
    unrotated, rotated = _split_rotations(proj)
    return F.normalize(rotated, dim=1) @ F.normalize(unrotated, dim=1).T


def _keep_least_wrong(scores: Tensor, truth: Tensor, ratio: float) -> Tensor:
    """Selective transfer: keep the rows whose teacher ranks the truth first, plus the
    ``⌊ratio·#wrong⌋`` wrong rows whose truth has the smallest rank. Returns a bool mask."""
    rank = (scores > scores.gather(1, truth[:, None])).sum(1)
    wrong = (rank > 0).sum()
    # float64 so that the floor agrees with Python's int(n * ratio) in the reference
    n_keep = len(rank) - wrong + torch.floor(wrong.double() * ratio)
    position = rank.argsort(stable=True).argsort()
    return position < n_keep


@fp32
def sskd(logits_s: Tensor, logits_t: Tensor, proj_s: Tensor, proj_t: Tensor, target: Tensor,
         kd_T: float = 4.0, tf_T: float = 4.0, ss_T: float = 0.5,
         ratio_tf: float = 1.0, ratio_ss: float = 0.75) -> SSKDTerms:
    """SSKD's four loss terms with selective transfer.

    With ``o``/``k`` the student/teacher logits and ``S_s``/``S_t`` the ``3B×B`` cosine
    similarity matrices of the projections (rotated rows vs unrotated images):

    * ``ce = CE(o[r=0], y)``;
    * ``kd = kd_T²·KL(σ(k/kd_T) ‖ σ(o/kd_T))`` batchmean over the B unrotated rows;
    * ``tf`` = the same with ``tf_T`` over the kept rotated rows ``I_tf``;
    * ``ss = ss_T²·KL(σ(S_t/ss_T) ‖ σ(S_s/ss_T))`` batchmean over the kept rows ``I_ss``.

    Selective transfer ranks the truth in each teacher row (the label for ``tf``, the source
    image ⌊i/3⌋ for ``ss``) and keeps every row ranked first plus the ``⌊ratio·#wrong⌋`` wrong
    rows of smallest rank. A term with no kept row is 0.

    Args:
        logits_s, logits_t: ``(4B, K)`` logits of the rotated copies, image-major.
        proj_s, proj_t: ``(4B, d)`` :class:`SSKDHead` outputs, image-major.
        target: ``(B,)`` int64 labels of the images.
        kd_T, tf_T, ss_T: temperatures 4, 4, 0.5.
        ratio_tf, ratio_ss: fractions of wrong rows kept, 1.0 and 0.75.
        (Teacher inputs are detached.)

    Returns:
        :class:`SSKDTerms`. Book: chapter 4 "SSKD".
    """
    logits_t, proj_t = logits_t.detach(), proj_t.detach()
    o_nor, o_rot = _split_rotations(logits_s)
    k_nor, k_rot = _split_rotations(logits_t)
    sim_s, sim_t = _rotation_similarity(proj_s), _rotation_similarity(proj_t)
    keep_tf = _keep_least_wrong(k_rot, target.repeat_interleave(3), ratio_tf)
    source = torch.arange(len(sim_t), device=sim_t.device) // 3
    keep_ss = _keep_least_wrong(sim_t, source, ratio_ss)
    return SSKDTerms(
        ce=F.cross_entropy(o_nor, target),
        kd=kd(o_nor, k_nor, kd_T),
        tf=masked_mean(kd_per_sample(o_rot, k_rot, tf_T), keep_tf),
        ss=masked_mean(kd_per_sample(sim_s, sim_t, ss_T), keep_ss),
        keep_tf=keep_tf,
        keep_ss=keep_ss,
    )


@fp32
def sskd_head_loss(proj: Tensor) -> Tensor:
    """Self-supervised task that pre-trains the teacher's head (SSKD stage 1).

    ``L = mean_i CE(S_i, ⌊i/3⌋)``: each rotated row must find its own unrotated image among
    the B, the cosine similarities ``S`` (``3B×B``) used directly as logits (no temperature).

    Args:
        proj: ``(4B, d)`` head outputs on the image-major rotated batch.

    Returns:
        A scalar. Book: chapter 4 "SSKD".
    """
    sim = _rotation_similarity(proj)
    return F.cross_entropy(sim, torch.arange(len(sim), device=sim.device) // 3)


@torch.no_grad()
def sskd_head_accuracy(proj: Tensor) -> Tensor:
    """Share (in %) of the rotated rows whose most similar unrotated image is their own: what
    SSKD's code logs as the teacher head's self-supervised accuracy while stage 1 trains it.

    Args:
        proj: ``(4B, d)`` head outputs on the image-major rotated batch.

    Returns:
        A scalar in [0, 100]. Book: chapter 4 "SSKD".
    """
    sim = _rotation_similarity(proj)
    return 100.0 * (sim.argmax(1) == torch.arange(len(sim), device=sim.device) // 3).float().mean()
