"""Method registry: a method name -> its losses, auxiliary modules, weights and schedule.

A :class:`Method` is an ``nn.Module`` that owns its auxiliary modules (connectors,
embeddings, memory banks) and declares what it needs from the trainer. Given a batch, the
student's and the teacher's :class:`~kdlib.models.Features` and the epoch, it returns a dict of
named, already weighted loss terms (the cross-entropy included); the trainer sums them.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import losses
from .models import Features


@dataclass
class Batch:
    """One training batch as the DeviceLoader yields it.

    Attributes:
        images: ``(B, C, H, W)`` normalised float images; for methods with
            ``needs_rotations`` ``(4B, C, H, W)`` ordered sample-major
            (``[x0 rot0, x0 rot90, x0 rot180, x0 rot270, x1 rot0, ...]``).
        labels: ``(B,)`` int64 class labels.
        indices: ``(B,)`` int64 positions of the samples in the training split.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor


@dataclass
class SetupInfo:
    """What a method may need to build its auxiliary modules (given once, before training).

    Attributes:
        feats_s, feats_t: Features of the student and the teacher on a couple of training
            images (for the shapes of every tensor a method might connect).
        num_classes: K.
        train_labels: ``(N,)`` labels of the whole training split (CRD samples negatives
            from other classes).
        epochs: length of the run, for schedules defined as fractions of the paper's run.
    """

    feats_s: Features
    feats_t: Features
    num_classes: int
    train_labels: Tensor
    epochs: int


@dataclass
class InitStage:
    """A stage trained before the main one (AB/FT/FSP initialisation, SSKD's teacher head).

    Attributes:
        epochs: length of the stage (already scaled to the run by the method).
        parameters: what this stage's own SGD optimizer trains.
        loss: ``loss(batch, fs, ft) -> {name: weighted scalar}``.
        lr, milestones, gamma: its step schedule (epochs count from 1 within the stage).
    """

    epochs: int
    parameters: list[nn.Parameter]
    loss: Callable[[Batch, Features, Features], dict[str, Tensor]]
    lr: float = 0.05
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1


class Method(nn.Module):
    """Base class: plain cross-entropy training (the ``vanilla`` student).

    Subclasses override :meth:`distill` (and :meth:`setup` when they own modules). Class
    attributes declare what the trainer must provide.
    """

    needs_teacher = False     # run the teacher forward at all
    needs_preact = False      # forward_features(preact=True) for both nets
    needs_rotations = False   # the loader yields 4 rotated copies per image (SSKD)

    def __init__(self, ce_weight: float = 1.0):
        super().__init__()
        self.ce_weight = ce_weight

    def setup(self, info: SetupInfo) -> None:
        """Build auxiliary modules from the shapes in ``info`` (default: nothing to build)."""

    def init_stage(self, model: nn.Module) -> InitStage | None:
        """The stage to train before the main one, if the method has one (called after setup)."""
        return None

    def forward(self, batch: Batch, fs: Features, ft: Features | None, epoch: int) -> dict[str, Tensor]:
        """Weighted loss terms of one step (``epoch`` counts from 1), each a scalar tensor."""
        terms = {"ce": self.ce_weight * F.cross_entropy(fs.logits.float(), batch.labels)}
        if self.needs_teacher:
            terms.update(self.distill(batch, fs, ft, epoch))
        return terms

    def distill(self, batch: Batch, fs: Features, ft: Features, epoch: int) -> dict[str, Tensor]:
        """The distillation terms, already weighted (none for ``vanilla``)."""
        return {}


class KD(Method):
    """Hinton et al.'s KD: ``ce_weight·CE + kd_weight·kd(z_s, z_t, T)`` (chapter 0).

    Defaults are RepDistiller's CIFAR-100 values: CE 0.1, KD 0.9, T=4.
    """

    needs_teacher = True

    def __init__(self, ce_weight: float = 0.1, kd_weight: float = 0.9, T: float = 4.0):
        super().__init__(ce_weight)
        self.kd_weight, self.T = kd_weight, T

    def distill(self, batch, fs, ft, epoch):
        return {"kd": self.kd_weight * losses.kd(fs.logits, ft.logits, self.T)}


_METHODS: dict[str, Callable[..., Method]] = {"vanilla": Method, "kd": KD}


def list_methods() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(_METHODS)


def create(name: str, **overrides) -> Method:
    """Build a method by name with its paper defaults, overridden by keyword arguments.

    Raises:
        ValueError: unknown method name, or a hyperparameter the method does not have (the
            message lists the valid ones).
    """
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(list_methods())}")
    signature = inspect.signature(_METHODS[name])
    valid = list(signature.parameters)
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ValueError(f"method {name!r} has no hyperparameter {', '.join(map(repr, bad))}; "
                         f"valid: {', '.join(valid) or '(none)'}")
    bound = signature.bind(**overrides)
    bound.apply_defaults()
    method = _METHODS[name](**overrides)
    method.config = {"name": name, **bound.arguments}  # what a run record is keyed by
    return method
