"""Method registry: a method name -> its losses, auxiliary modules, weights and schedule.

A :class:`Method` is an ``nn.Module`` that owns its auxiliary modules (connectors,
embeddings, memory banks) and declares what it needs from the trainer. Given a batch, the
student's and the teacher's :class:`~kdlib.models.Features` and the step, it returns a dict of
named, already weighted loss terms (the cross-entropy included); the trainer sums them. The
losses themselves live in :mod:`kdlib.losses`; a method only picks tensors, weights and
schedules them.

What the trainer reads from a method (class attributes, overridden per instance where a
hyperparameter sets them):

* ``needs_teacher``, ``needs_preact``, ``needs_rotations``: what each step must provide.
* ``teacher_train_mode``: run the teacher's BatchNorm in train mode (CD's code does).
* ``grad_clip``: clip the global gradient norm at this value (SDD's trainer: 40), or None.
* ``terms``: the names of the terms :meth:`Method.forward` returns.

Conventions:

* Hyperparameters are constructor keyword arguments with the papers' CIFAR-100 defaults
  (each class's docstring names its source); :func:`create` records them as ``method.config``.
* Epoch counts (warm-ups, init stages, EDT) are in epochs of the paper's run
  (``paper_epochs``: 240 for the CRD recipe, 200 for CD's) and become **optimizer steps** of
  this run with :meth:`Method.span` (the same fraction of the run, at least ``MIN_SPAN``
  steps): a 20-of-240-epoch warm-up stays a warm-up in an 8-epoch run instead of rounding
  to one epoch, where it would be a no-op. Steps count from 1.
* Modules trained only in an init stage (AB's connectors, FT's paraphraser, SSKD's teacher
  head) are frozen at setup, so the main optimizer leaves them alone; ``init_stage``
  unfreezes them for its own optimizer and the main step uses them under ``no_grad``.
* Networks with different numbers of stages (3 for CIFAR ResNets, WRNs and ShuffleNets, 4 for
  VGG, ResNet50 and MobileNetV2) are paired explicitly by ``stage_align``
  (:func:`align_stages`); a pair a method cannot connect raises a ``ValueError`` at setup
  naming the method, both networks and why.
* Combinations (``crd+kd``, ``wttm+crd``, ``cd+gkd`` ...) are :class:`Combo` sums of the parts'
  classes: each part keeps its term names, the CE is counted once, and the parts'
  hyperparameters are addressed as ``<part>__<name>`` (e.g. ``kd__T``).
"""
from __future__ import annotations

import inspect
import math
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
            images (for the shapes of every tensor a method might connect); ``feats_t`` is
            None without a teacher.
        num_classes: K.
        train_labels: ``(N,)`` labels of the whole training split (CRD samples negatives
            from other classes).
        steps: optimizer steps of the whole main run (epochs × steps per epoch), for
            schedules defined as fractions of the paper's run.
        steps_per_epoch: optimizer steps in one epoch (init stages run whole loader epochs).
        lr: the student's base learning rate in the main stage (AB's and FSP's init stages
            train at it, as RepDistiller's).
        classifier_s, classifier_t: the networks' final ``nn.Linear`` (SDD runs them on every
            cell of its pyramid).
        arch_s, arch_t: architecture names (FT's init learning rate depends on the student's;
            error messages name both).
    """

    feats_s: Features
    feats_t: Features | None
    num_classes: int
    train_labels: Tensor
    steps: int
    steps_per_epoch: int = 1
    lr: float = 0.05
    classifier_s: nn.Linear | None = None
    classifier_t: nn.Linear | None = None
    arch_s: str | None = None
    arch_t: str | None = None


@dataclass
class InitStage:
    """A stage trained before the main one (AB/FT/FSP initialisation, SSKD's teacher head).

    Attributes:
        steps: length of the stage in optimizer steps (already scaled to the run by the method).
        parameters: what this stage's own SGD optimizer trains.
        loss: ``loss(batch, fs, ft) -> {name: weighted scalar}``.
        lr, milestones, gamma: its step-decay schedule, milestones in steps of the stage
            (the learning rate is ``lr · gamma^(number of milestones m with step > m)``).
        needs_student: whether ``loss`` reads ``fs``; when False the trainer may skip the
            student's forward (FT's paraphraser and SSKD's teacher head see only the teacher).
    """

    steps: int
    parameters: list[nn.Parameter]
    loss: Callable[[Batch, Features | None, Features], dict[str, Tensor]]
    lr: float = 0.05
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    needs_student: bool = True


STAGE_ALIGN = ("first", "last")
MIN_SPAN = 2  # steps: the shortest schedule phase (a 1-step warm-up would be no warm-up)


def align_stages(feats_s: list[Tensor], feats_t: list[Tensor], rule: str) -> tuple[list[Tensor], list[Tensor]]:
    """Pair two networks' stage lists: the ``first`` or ``last`` n = min(n_s, n_t) stages of each.

    ``first`` is RepDistiller's pairing (its ``zip`` silently dropped the surplus stages at the
    end of the longer list; on the zoo it pairs maps whose sizes differ by at most 2x);
    ``last`` pairs the deepest stages.
    """
    n = min(len(feats_s), len(feats_t))
    if rule == "first":
        return list(feats_s[:n]), list(feats_t[:n])
    return list(feats_s[-n:]), list(feats_t[-n:])


def _check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _describe(arch: str | None, feats: Features) -> str:
    if arch:
        return arch
    return "a network with stages " + ", ".join("x".join(map(str, f.shape[1:])) for f in feats.stages)


def _feature_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The network's parameters except its classifier's (RepDistiller's ``get_feat_modules``)."""
    head = {id(p) for p in model.classifier.parameters()}
    return [p for p in model.parameters() if id(p) not in head]


# ---------------------------------------------------------------------------------------------
# Base classes

_METHODS: dict[str, Callable[..., "Method"]] = {}  # name -> constructor; filled as classes are defined


def _register(name: str, constructor: Callable[..., "Method"]) -> None:
    if name in _METHODS:
        raise ValueError(f"method name {name!r} is registered twice")
    _METHODS[name] = constructor


class Method(nn.Module):
    """Base class: plain cross-entropy training (the ``vanilla`` student; chapter 0 "Foundations").

    Subclasses override :meth:`distill` (and :meth:`setup` when they own modules, calling
    ``super().setup(info)`` first). Class attributes declare what the trainer must provide.
    A subclass that sets its own ``name`` registers itself under it (``register=False`` in
    the class statement opts out, as :class:`Combo` does).
    """

    def __init_subclass__(cls, register: bool = True, **kwargs):
        super().__init_subclass__(**kwargs)
        if register and "name" in cls.__dict__:
            _register(cls.name, cls)

    name = "vanilla"
    terms: tuple[str, ...] = ("ce",)
    needs_teacher = False     # run the teacher forward at all
    needs_preact = False      # forward_features(preact=True) for both nets
    needs_rotations = False   # the loader yields 4 rotated copies per image (SSKD)
    teacher_train_mode = False  # teacher BatchNorm in train mode (CD's code)
    grad_clip: float | None = None  # max global gradient norm (SDD's trainer)
    paper_epochs = 240        # the run the method's epoch counts refer to
    warmup_epochs = 0         # linear warm-up of the distillation terms (0: none)
    key_neutral: dict = {}    # hyperparameters added after records were stored: {name: value that
                              # reproduces those records}; left out of the key at that value

    def __init__(self, ce_weight: float = 1.0):
        super().__init__()
        self.ce_weight = ce_weight
        self.run_steps = self.paper_epochs

    def setup(self, info: SetupInfo) -> None:
        """Build auxiliary modules from the shapes in ``info``; remember the run length."""
        self.run_steps = info.steps

    def init_stage(self, model: nn.Module) -> InitStage | None:
        """The stage to train before the main one, if the method has one (called after setup)."""
        return None

    def report(self) -> dict[str, float]:
        """What the method measured of itself in the run's last epoch, stored in the run's record
        as ``method_report`` (SSKD: its teacher head's self-supervised accuracy); none by default."""
        return {}

    def span(self, epochs: float) -> int:
        """``epochs`` of the paper's run as optimizer steps of this run: the same fraction of
        the run, rounded, and at least :data:`MIN_SPAN` steps unless ``epochs`` is 0."""
        return max(MIN_SPAN, round(epochs * self.run_steps / self.paper_epochs)) if epochs else 0

    def warmup(self, step: int) -> float:
        """The warm-up factor ``min(step / W, 1)`` of ``step`` (from 1), W = ``span(warmup_epochs)``.

        mdistiller's ``min(epoch / 20, 1)`` per epoch, as a ramp over steps: < 1 at the first
        step of every run whatever its length.
        """
        w = self.span(self.warmup_epochs)
        return min(step / w, 1.0) if w else 1.0

    def incompatible(self, info: SetupInfo, why: str) -> ValueError:
        """The error for a teacher/student pair this method cannot connect."""
        return ValueError(f"method {self.name!r} cannot distil teacher {_describe(info.arch_t, info.feats_t)} "
                          f"into student {_describe(info.arch_s, info.feats_s)}: {why}")

    def forward(self, batch: Batch, fs: Features, ft: Features | None, step: int) -> dict[str, Tensor]:
        """Weighted loss terms of optimizer step ``step`` (from 1 over the whole run), each a scalar tensor."""
        terms = {"ce": self.ce_weight * F.cross_entropy(fs.logits.float(), batch.labels)}
        if self.needs_teacher:
            terms.update(self.distill(batch, fs, ft, step))
        return terms

    def distill(self, batch: Batch, fs: Features, ft: Features, step: int) -> dict[str, Tensor]:
        """The distillation terms, already weighted (none for ``vanilla``)."""
        return {}


class Distillation(Method):
    """Base of every method that learns from a teacher."""

    needs_teacher = True


class Combo(Distillation, register=False):
    """A sum of methods: every part's distillation terms under their own names, the CE once.

    Args:
        parts: ``{part name: method}``; the parts' own ``ce_weight`` is ignored.
        ce_weight: weight of the single cross-entropy term.

    The trainer's flags are the parts' combined: ``needs_preact`` and ``teacher_train_mode``
    if any part needs them, the smallest ``grad_clip``; at most one part may have an init stage.
    Parts contribute through :meth:`~Method.distill`, so SSKD (whose rotated batches need its
    own ``forward``) cannot be one.
    """

    name = "combo"

    def __init__(self, parts: dict[str, Method], ce_weight: float = 1.0):
        super().__init__(ce_weight)
        self.parts = nn.ModuleDict(parts)
        names = [t for p in parts.values() for t in p.terms if t != "ce"]
        if len(set(names)) != len(names):
            raise ValueError(f"parts {list(parts)} have clashing term names {names}")
        self.terms = ("ce", *names)
        self.needs_preact = any(p.needs_preact for p in parts.values())
        self.teacher_train_mode = any(p.teacher_train_mode for p in parts.values())
        self.grad_clip = min((p.grad_clip for p in parts.values() if p.grad_clip), default=None)

    def setup(self, info):
        super().setup(info)
        for part in self.parts.values():
            part.setup(info)

    def init_stage(self, model):
        stages = [s for s in (p.init_stage(model) for p in self.parts.values()) if s is not None]
        if len(stages) > 1:
            raise ValueError(f"method {self.name!r}: more than one part has an init stage")
        return stages[0] if stages else None

    def distill(self, batch, fs, ft, step):
        return {k: v for part in self.parts.values() for k, v in part.distill(batch, fs, ft, step).items()}


def combo(name: str, doc: str, parts: dict[str, tuple[type[Method], dict]], cls: type[Combo] = Combo):
    """Register the combination ``name``: a constructor whose signature :func:`create` validates.

    Its keyword arguments are ``cls``'s own (``ce_weight`` ...) and every part's
    hyperparameter as ``<part>__<name>``, defaulting to the part's default unless ``parts``
    gives the combination's own value (e.g. KD's weight is 1, not 0.9, in ``crd+kd``).
    """
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [p.replace(kind=keyword) for p in inspect.signature(cls).parameters.values() if p.name != "parts"]
    for prefix, (part, defaults) in parts.items():
        own = inspect.signature(part).parameters
        assert set(defaults) <= set(own), f"{name}: {part.__name__} has no {set(defaults) - set(own)}"
        params += [p.replace(name=f"{prefix}__{p.name}", kind=keyword, default=defaults.get(p.name, p.default))
                   for p in own.values() if p.name != "ce_weight"]
    signature = inspect.Signature(params)

    def build(**hparams) -> Combo:
        bound = signature.bind(**hparams)
        bound.apply_defaults()
        split: dict[str, dict] = {prefix: {} for prefix in parts}
        top = {}
        for key, value in bound.arguments.items():
            prefix, sep, param = key.partition("__")
            if sep:
                split[prefix][param] = value
            else:
                top[key] = value
        method = cls({prefix: part(**split[prefix]) for prefix, (part, _) in parts.items()}, **top)
        method.name = name
        return method

    build.__signature__ = signature
    build.__doc__ = doc
    build.key_neutral = {**cls.key_neutral, **{f"{prefix}__{k}": v for prefix, (part, _) in parts.items()
                                               for k, v in part.key_neutral.items()}}
    _register(name, build)
    return build


# ---------------------------------------------------------------------------------------------
# Logits (chapters 0, 1, 2 and 5)

class KD(Distillation):
    """Hinton et al.'s KD: ``ce_weight·CE + kd_weight·kd(z_s, z_t, T)`` (chapter 0 "Foundations").

    Defaults are RepDistiller's CIFAR-100 values: CE 0.1, KD 0.9, T=4.
    """

    name = "kd"
    terms = ("ce", "kd")

    def __init__(self, ce_weight: float = 0.1, kd_weight: float = 0.9, T: float = 4.0):
        super().__init__(ce_weight)
        self.kd_weight, self.T = kd_weight, T

    def distill(self, batch, fs, ft, step):
        return {"kd": self.kd_weight * losses.kd(fs.logits, ft.logits, self.T)}


class DKD(Distillation):
    """Decoupled KD (chapter 0 "Foundations"): ``CE + w·dkd(α, β, T)``, ``w`` the linear warm-up
    over the first 20/240 of the run (:meth:`Method.warmup`).

    mdistiller's CIFAR-100 values: CE 1, α=1, β=8 (6 or 2 for some pairs, see
    :func:`for_pair`), T=4, a 20-epoch (of 240) linear warm-up of the DKD term.
    """

    name = "dkd"
    terms = ("ce", "dkd")

    def __init__(self, ce_weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0,
                 warmup_epochs: int = 20):
        super().__init__(ce_weight)
        self.alpha, self.beta, self.T, self.warmup_epochs = alpha, beta, T, warmup_epochs

    def distill(self, batch, fs, ft, step):
        loss = losses.dkd(fs.logits, ft.logits, batch.labels, self.alpha, self.beta, self.T)
        return {"dkd": self.warmup(step) * loss}


class NKD(Distillation):
    """Normalised KD as the SDD repository runs it (chapter 1 "SDD"): ``CE + w·nkd``, ``w`` the warm-up.

    Paper vs code: the SDD repository's NKD (the code behind its NKD numbers) builds its
    non-target mask with a bug that keeps every class, so by default ``drop_target=False``;
    ``drop_target=True`` is the original NKD (cls_KD). γ=1.5 and T=1 are hard-coded there
    (the NKD paper's ImageNet values), the warm-up is DKD's 20 epochs of 240.
    """

    name = "nkd"
    terms = ("ce", "nkd")

    def __init__(self, ce_weight: float = 1.0, gamma: float = 1.5, T: float = 1.0, drop_target: bool = False,
                 warmup_epochs: int = 20):
        super().__init__(ce_weight)
        self.gamma, self.T, self.drop_target, self.warmup_epochs = gamma, T, drop_target, warmup_epochs

    def distill(self, batch, fs, ft, step):
        loss = losses.nkd(fs.logits, ft.logits, batch.labels, self.gamma, self.T, self.drop_target)
        return {"nkd": self.warmup(step) * loss}


class GKD(Distillation):
    """Guided KD (chapter 2 "CD"): ``CE + gkd_weight·gkd(T)``, KD on the samples the teacher gets right.

    CD's CIFAR values: weight 0.1 (1 on ImageNet), T=1. Alone it runs with the usual frozen
    teacher; in ``cd+gkd`` the teacher mode is CD's.
    """

    name = "gkd"
    terms = ("ce", "gkd")

    def __init__(self, ce_weight: float = 1.0, gkd_weight: float = 0.1, T: float = 1.0):
        super().__init__(ce_weight)
        self.gkd_weight, self.T = gkd_weight, T

    def distill(self, batch, fs, ft, step):
        return {"gkd": self.gkd_weight * losses.gkd(fs.logits, ft.logits, batch.labels, self.T)}


class TTM(Distillation):
    """Transformed teacher matching (chapter 5 "TTM and WTTM"): ``CE + ttm_weight·ttm(γ)``.

    No temperature on the student and no T². γ and the weight (the paper's β) are per pair
    (:func:`for_pair`); the defaults are vgg13→vgg8's, the README's example (γ=0.1, β=45).
    """

    name = "ttm"
    terms = ("ce", "ttm")

    def __init__(self, ce_weight: float = 1.0, ttm_weight: float = 45.0, gamma: float = 0.1):
        super().__init__(ce_weight)
        self.ttm_weight, self.gamma = ttm_weight, gamma

    def distill(self, batch, fs, ft, step):
        return {"ttm": self.ttm_weight * losses.ttm(fs.logits, ft.logits, self.gamma)}


class WTTM(Distillation):
    """Weighted TTM (chapter 5 "TTM and WTTM"): ``CE + wttm_weight·wttm(γ)``.

    Per-pair γ and weight (the paper's β) via :func:`for_pair`; defaults are vgg13→vgg8's
    (γ=0.1, β=2.25, appendix Table 8).
    """

    name = "wttm"
    terms = ("ce", "wttm")

    def __init__(self, ce_weight: float = 1.0, wttm_weight: float = 2.25, gamma: float = 0.1):
        super().__init__(ce_weight)
        self.wttm_weight, self.gamma = wttm_weight, gamma

    def distill(self, batch, fs, ft, step):
        return {"wttm": self.wttm_weight * losses.wttm(fs.logits, ft.logits, self.gamma)}


class DIST(Distillation):
    """DIST (chapter 5 "TTM and WTTM", a baseline): ``CE + dist_weight·dist(β, γ, τ)``.

    Defaults are the TTM repository's (β=γ=1, τ=4, weight 1).
    """

    name = "dist"
    terms = ("ce", "dist")

    def __init__(self, ce_weight: float = 1.0, dist_weight: float = 1.0, beta: float = 1.0, gamma: float = 1.0,
                 tau: float = 4.0):
        super().__init__(ce_weight)
        self.dist_weight, self.beta, self.gamma, self.tau = dist_weight, beta, gamma, tau

    def distill(self, batch, fs, ft, step):
        return {"dist": self.dist_weight * losses.dist(fs.logits, ft.logits, self.beta, self.gamma, self.tau)}


# ---------------------------------------------------------------------------------------------
# SDD (chapter 1)

class SDD(Distillation):
    """Base of SD-KD, SD-DKD and SD-NKD (chapter 1 "SDD").

    The final maps go through a spatial pyramid (``scales``, global cell first), each network's
    own classifier turns every cell into logits, and the ``base`` loss is applied per cell with
    complementary cells weighted ``complementary_weight``:
    ``ce_weight·CE + sdd_weight·warm-up·sdd(...)``. Needs ``SetupInfo.classifier_s/_t``.

    Paper vs code: SDD's trainer clips the gradient norm at 40 (not in the paper):
    ``grad_clip=40`` by default, None turns it off. ``scales`` is per pair (:func:`for_pair`:
    (1, 2) for same-family pairs, (1, 2, 4) otherwise, the default).
    """

    terms = ("ce", "sdd")
    base: str  # the per-cell loss: "kd", "dkd" or "nkd"

    def __init__(self, ce_weight, sdd_weight, scales, complementary_weight, warmup_epochs, grad_clip,
                 **base_hparams):
        super().__init__(ce_weight)
        self.sdd_weight, self.scales = sdd_weight, tuple(scales)
        self.complementary_weight, self.warmup_epochs, self.grad_clip = complementary_weight, warmup_epochs, grad_clip
        self.base_hparams = base_hparams

    def setup(self, info):
        super().setup(info)
        if info.classifier_s is None or info.classifier_t is None:
            raise ValueError(f"method {self.name!r} needs SetupInfo.classifier_s and classifier_t "
                             "(the networks' final nn.Linear) to classify its pyramid cells")
        # plain references, not submodules: the student's head is trained as the student's
        self._classifiers = (info.classifier_s, info.classifier_t)

    def distill(self, batch, fs, ft, step):
        classifier_s, classifier_t = self._classifiers
        patch_s = losses.patch_logits(fs.final_map, classifier_s, self.scales)
        with torch.no_grad():
            patch_t = losses.patch_logits(ft.final_map, classifier_t, self.scales)
        loss = losses.sdd(patch_s, patch_t, batch.labels, self.base, self.complementary_weight, **self.base_hparams)
        return {"sdd": self.sdd_weight * self.warmup(step) * loss}


class SDKD(SDD):
    """SD-KD (chapter 1 "SDD"): ``0.1·CE + 0.9·sdd(base=kd, T=4)``.

    Paper vs code: no warm-up in the code (``warmup_epochs=0``); the paper's 30-epoch warm-up
    is ``warmup_epochs=30``. See :class:`SDD` for ``scales`` and ``grad_clip``.
    """

    name = "sd-kd"
    base = "kd"

    def __init__(self, ce_weight: float = 0.1, sdd_weight: float = 0.9, T: float = 4.0,
                 scales: tuple[int, ...] = (1, 2, 4), complementary_weight: float = 2.0, warmup_epochs: int = 0,
                 grad_clip: float | None = 40.0):
        super().__init__(ce_weight, sdd_weight, scales, complementary_weight, warmup_epochs, grad_clip, T=T)


class SDDKD(SDD):
    """SD-DKD (chapter 1 "SDD"): ``CE + w·sdd(base=dkd, α=1, β, T=4)``, ``w`` the warm-up.

    β is per pair (:func:`for_pair`, DKD's). Paper vs code: the code warms up for 20 epochs,
    the paper says 30 (``warmup_epochs=30``). See :class:`SDD` for ``scales`` and ``grad_clip``.
    """

    name = "sd-dkd"
    base = "dkd"

    def __init__(self, ce_weight: float = 1.0, sdd_weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0,
                 T: float = 4.0, scales: tuple[int, ...] = (1, 2, 4), complementary_weight: float = 2.0,
                 warmup_epochs: int = 20, grad_clip: float | None = 40.0):
        super().__init__(ce_weight, sdd_weight, scales, complementary_weight, warmup_epochs, grad_clip,
                         alpha=alpha, beta=beta, T=T)


class SDNKD(SDD):
    """SD-NKD (chapter 1 "SDD"): ``CE + w·sdd(base=nkd, γ, T=4)``, ``w`` the warm-up, as the SDD code runs it.

    Paper vs code: the code reads NKD's hyperparameters from its DKD section (T=4, γ = DKD's
    β: 8, or 6/2 per pair via :func:`for_pair`) and its NKD mask bug keeps the target class
    (``drop_target=False``; True is the original NKD). Warm-up 20 in code, 30 in the paper.
    """

    name = "sd-nkd"
    base = "nkd"

    def __init__(self, ce_weight: float = 1.0, sdd_weight: float = 1.0, gamma: float = 8.0, T: float = 4.0,
                 drop_target: bool = False, scales: tuple[int, ...] = (1, 2, 4), complementary_weight: float = 2.0,
                 warmup_epochs: int = 20, grad_clip: float | None = 40.0):
        super().__init__(ce_weight, sdd_weight, scales, complementary_weight, warmup_epochs, grad_clip,
                         gamma=gamma, T=T, drop_target=drop_target)


# ---------------------------------------------------------------------------------------------
# CD (chapter 2)

class CD(Distillation):
    """Channel distillation (chapter 2 "CD"): ``CE + cd_weight·cd(connectors(stages_s), stages_t)``.

    One ``CDConnector`` (1×1 conv-BN-ReLU, trained) per aligned stage maps the student to the
    teacher's channels; CD compares spatial means, so map sizes never matter. CD's code has 4
    stages on both sides; for the zoo ``stage_align="last"`` pairs the deepest stages
    (reference §3.6). Its connectors end with a ReLU, so they cannot match the negative
    channel means of WRN and MobileNetV2 stages (not post-ReLU); kept as in the code.

    Paper vs code: CD's code puts the teacher in the training wrapper, so its BatchNorm runs in
    train mode (batch statistics, running statistics updated during distillation):
    ``teacher_train_mode=True`` by default, False is the usual frozen ``eval()`` teacher.
    Weights are constant here (CIFAR "cd.ce"); see ``cd+gkd+edt`` for the schedule.
    """

    name = "cd"
    terms = ("ce", "cd")
    paper_epochs = 200

    def __init__(self, ce_weight: float = 1.0, cd_weight: float = 6.0, teacher_train_mode: bool = True,
                 stage_align: str = "last"):
        super().__init__(ce_weight)
        _check_choice("stage_align", stage_align, STAGE_ALIGN)
        self.cd_weight, self.teacher_train_mode, self.stage_align = cd_weight, teacher_train_mode, stage_align

    def setup(self, info):
        super().setup(info)
        s, t = align_stages(info.feats_s.stages, info.feats_t.stages, self.stage_align)
        self.connectors = nn.ModuleList(losses.CDConnector(a.shape[1], b.shape[1]) for a, b in zip(s, t))

    def distill(self, batch, fs, ft, step):
        s, t = align_stages(fs.stages, ft.stages, self.stage_align)
        mapped = [connector(f) for connector, f in zip(self.connectors, s)]
        return {"cd": self.cd_weight * losses.cd(mapped, t)}


class EDT(Combo):
    """Early Decay Teacher over CD + GKD (chapter 2 "CD"), as CD's code runs it on CIFAR.

    Every term but ``cd`` (the CE and GKD) is switched off for the first ``off_epochs`` (60 of
    200) epochs, so the student first learns from the CD feature loss alone; the CD weight is
    multiplied by ``cd_decay`` (0.9) at each of ``cd_milestones`` (60 and 160) reached. Epoch
    counts scale to the run. The abstract only says the distillation weight decays; the
    zero-CE phase is a code-level fact.
    """

    paper_epochs = 200

    def __init__(self, parts: dict[str, Method], ce_weight: float = 1.0, off_epochs: int = 60,
                 cd_decay: float = 0.9, cd_milestones: tuple[int, ...] = (60, 160)):
        super().__init__(parts, ce_weight)
        self.off_epochs, self.cd_decay, self.cd_milestones = off_epochs, cd_decay, tuple(cd_milestones)

    def schedule(self, step: int) -> dict[str, float]:
        """The factor of each term at optimizer step ``step`` (from 1). The code's epoch rules
        ``epoch > 60`` (terms on) and ``epoch >= m`` (decay) become "after the first 60 epochs"
        and "from the start of epoch m", i.e. after ``m - 1`` epochs, as fractions of the run."""
        on = float(step > self.span(self.off_epochs))
        decay = self.cd_decay ** sum(step > self.span(m - 1) for m in self.cd_milestones)
        return {term: decay if term == "cd" else on for term in self.terms}

    def forward(self, batch, fs, ft, step):
        factors = self.schedule(step)
        return {k: factors[k] * v for k, v in super().forward(batch, fs, ft, step).items()}


# ---------------------------------------------------------------------------------------------
# Feature baselines (chapters 0 and 3)

class FitNet(Distillation):
    """FitNet as RepDistiller runs it (chapter 0 "Foundations"): ``CE + 100·hint(ConvReg(f_s), f_t)``.

    The hint is ``feats()[hint_layer]`` of both networks (2: the second stage's output); a
    trained ``ConvReg`` maps the student's map to the teacher's shape. Single stage, jointly
    with the CE (not the original two-stage FitNets).
    """

    name = "fitnet"
    terms = ("ce", "hint")

    def __init__(self, ce_weight: float = 1.0, hint_weight: float = 100.0, hint_layer: int = 2):
        super().__init__(ce_weight)
        self.hint_weight, self.hint_layer = hint_weight, hint_layer

    def setup(self, info):
        super().setup(info)
        s, t = info.feats_s.feats()[self.hint_layer], info.feats_t.feats()[self.hint_layer]
        try:
            self.regressor = losses.ConvReg(s.shape, t.shape)
        except ValueError as e:
            raise self.incompatible(info, str(e)) from e

    def distill(self, batch, fs, ft, step):
        f_s, f_t = fs.feats()[self.hint_layer], ft.feats()[self.hint_layer]
        return {"hint": self.hint_weight * losses.hint(self.regressor(f_s), f_t)}


class AT(Distillation):
    """Attention transfer (chapter 0 "Foundations"): ``CE + 1000·Σ_stages at(p=2)``."""

    name = "at"
    terms = ("ce", "at")

    def __init__(self, ce_weight: float = 1.0, at_weight: float = 1000.0, p: float = 2.0,
                 stage_align: str = "first"):
        super().__init__(ce_weight)
        _check_choice("stage_align", stage_align, STAGE_ALIGN)
        self.at_weight, self.p, self.stage_align = at_weight, p, stage_align

    def distill(self, batch, fs, ft, step):
        s, t = align_stages(fs.stages, ft.stages, self.stage_align)
        return {"at": self.at_weight * sum(losses.at(s, t, p=self.p))}


class NST(Distillation):
    """Neuron selectivity transfer (chapter 3 "DCD and RRD", a baseline): ``CE + 50·Σ_stages nst``."""

    name = "nst"
    terms = ("ce", "nst")

    def __init__(self, ce_weight: float = 1.0, nst_weight: float = 50.0, stage_align: str = "first"):
        super().__init__(ce_weight)
        _check_choice("stage_align", stage_align, STAGE_ALIGN)
        self.nst_weight, self.stage_align = nst_weight, stage_align

    def distill(self, batch, fs, ft, step):
        return {"nst": self.nst_weight * sum(losses.nst(*align_stages(fs.stages, ft.stages, self.stage_align)))}


class VID(Distillation):
    """Variational information distillation (chapter 3 "DCD and RRD", a baseline): ``CE + Σ_stages VID``.

    Trains one regressor and one per-channel variance (initially ``init_var``) per stage.
    """

    name = "vid"
    terms = ("ce", "vid")

    def __init__(self, ce_weight: float = 1.0, vid_weight: float = 1.0, init_var: float = 5.0,
                 stage_align: str = "first"):
        super().__init__(ce_weight)
        _check_choice("stage_align", stage_align, STAGE_ALIGN)
        self.vid_weight, self.init_var, self.stage_align = vid_weight, init_var, stage_align

    def setup(self, info):
        super().setup(info)
        s, t = align_stages(info.feats_s.stages, info.feats_t.stages, self.stage_align)
        self.vid = losses.VID([f.shape[1] for f in s], [f.shape[1] for f in t], self.init_var)

    def distill(self, batch, fs, ft, step):
        return {"vid": self.vid_weight * sum(self.vid(*align_stages(fs.stages, ft.stages, self.stage_align)))}


class SP(Distillation):
    """Similarity-preserving KD (chapter 3 "DCD and RRD", a baseline): ``CE + 3000·sp`` on the last stage map."""

    name = "sp"
    terms = ("ce", "sp")

    def __init__(self, ce_weight: float = 1.0, sp_weight: float = 3000.0):
        super().__init__(ce_weight)
        self.sp_weight = sp_weight

    def distill(self, batch, fs, ft, step):
        return {"sp": self.sp_weight * losses.sp(fs.feats()[-2], ft.feats()[-2])}


class CC(Distillation):
    """Correlation congruence (chapter 3 "DCD and RRD", a baseline): ``CE + 0.02·cc(e_s, e_t)``.

    Both embeddings (``Linear(d, feat_dim)``, no normalisation) are trained, the teacher's
    too, on the pooled features (the teacher's detached).
    """

    name = "cc"
    terms = ("ce", "cc")

    def __init__(self, ce_weight: float = 1.0, cc_weight: float = 0.02, feat_dim: int = 128):
        super().__init__(ce_weight)
        self.cc_weight, self.feat_dim = cc_weight, feat_dim

    def setup(self, info):
        super().setup(info)
        self.embed_s = nn.Linear(info.feats_s.pooled.shape[1], self.feat_dim)
        self.embed_t = nn.Linear(info.feats_t.pooled.shape[1], self.feat_dim)

    def distill(self, batch, fs, ft, step):
        return {"cc": self.cc_weight * losses.cc(self.embed_s(fs.pooled), self.embed_t(ft.pooled.detach()))}


class RKD(Distillation):
    """Relational KD (chapter 3 "DCD and RRD", a baseline): ``CE + rkd(w_d=25, w_a=50)`` on pooled features."""

    name = "rkd"
    terms = ("ce", "rkd")

    def __init__(self, ce_weight: float = 1.0, rkd_weight: float = 1.0, w_d: float = 25.0, w_a: float = 50.0):
        super().__init__(ce_weight)
        self.rkd_weight, self.w_d, self.w_a = rkd_weight, w_d, w_a

    def distill(self, batch, fs, ft, step):
        return {"rkd": self.rkd_weight * losses.rkd(fs.pooled, ft.pooled, self.w_d, self.w_a)}


class PKT(Distillation):
    """Probabilistic knowledge transfer (chapter 3 "DCD and RRD", a baseline): ``CE + 30000·pkt``.

    On the pooled features.
    """

    name = "pkt"
    terms = ("ce", "pkt")

    def __init__(self, ce_weight: float = 1.0, pkt_weight: float = 30000.0):
        super().__init__(ce_weight)
        self.pkt_weight = pkt_weight

    def distill(self, batch, fs, ft, step):
        return {"pkt": self.pkt_weight * losses.pkt(fs.pooled, ft.pooled)}


# ---------------------------------------------------------------------------------------------
# RepDistiller's two-stage baselines (chapter 3)

class _TwoStage(Distillation):
    """Base of AB, FT and FSP: an init stage of ``init_epochs`` (30 of 240, scaled) first.

    As RepDistiller's ``pretrain.py``: its own SGD at the student's base learning rate over
    :meth:`init_parameters`, the loss :meth:`init_loss` unweighted (the command line's ``-b``
    never reaches it). Subclasses define both.
    """

    terms = ("ce",)
    init_needs_student = True

    def __init__(self, ce_weight: float, init_epochs: int):
        super().__init__(ce_weight)
        self.init_epochs = init_epochs

    def setup(self, info):
        super().setup(info)
        self.init_lr = info.lr

    def init_stage(self, model):
        params = self.init_parameters(model)
        for p in params:
            p.requires_grad_(True)
        return InitStage(self.span(self.init_epochs), params, self.init_loss, lr=self.init_lr,
                         needs_student=self.init_needs_student)


class AB(_TwoStage):
    """Activation boundaries (chapter 3 "DCD and RRD", a baseline), RepDistiller's version.

    Init stage only: ``Σ_stages ab(connector(preact_s), preact_t, margin)`` trains the
    connectors and the student's feature layers; the main stage is CE alone (RepDistiller sets
    its AB term to 0 there). Stages paired by ``stage_align``.
    """

    name = "ab"
    needs_preact = True

    def __init__(self, ce_weight: float = 1.0, margin: float = 1.0, init_epochs: int = 30,
                 stage_align: str = "first"):
        super().__init__(ce_weight, init_epochs)
        _check_choice("stage_align", stage_align, STAGE_ALIGN)
        self.margin, self.stage_align = margin, stage_align

    def setup(self, info):
        super().setup(info)
        s, t = align_stages(info.feats_s.stages_preact, info.feats_t.stages_preact, self.stage_align)
        try:
            self.connector = losses.ABConnector([f.shape[1:] for f in s], [f.shape[1:] for f in t])
        except ValueError as e:
            raise self.incompatible(info, str(e)) from e
        self.connector.requires_grad_(False)

    def init_parameters(self, model):
        return [*self.connector.parameters(), *_feature_parameters(model)]

    def init_loss(self, batch, fs, ft):
        s, t = align_stages(fs.stages_preact, ft.stages_preact, self.stage_align)
        return {"ab": sum(losses.ab(self.connector(s), t, self.margin))}


class FSP(_TwoStage):
    """Flow of solution procedure (chapter 3 "DCD and RRD", a baseline), RepDistiller's version.

    Init stage only: ``Σ fsp([stem, *stages_s], [stem, *stages_t])`` trains the student's
    feature layers; the main stage is CE alone. Needs equal channel counts at every aligned
    position (not the case for most cross-family pairs).
    """

    name = "fsp"

    def __init__(self, ce_weight: float = 1.0, init_epochs: int = 30, stage_align: str = "first"):
        super().__init__(ce_weight, init_epochs)
        _check_choice("stage_align", stage_align, STAGE_ALIGN)
        self.stage_align = stage_align

    def maps(self, fs: Features, ft: Features) -> tuple[list[Tensor], list[Tensor]]:
        s, t = align_stages(fs.stages, ft.stages, self.stage_align)
        return [fs.stem, *s], [ft.stem, *t]

    def setup(self, info):
        super().setup(info)
        s, t = self.maps(info.feats_s, info.feats_t)
        c_s, c_t = [f.shape[1] for f in s], [f.shape[1] for f in t]
        if c_s != c_t:
            raise self.incompatible(info, f"FSP needs equal channel counts at every map, got {c_s} and {c_t}")

    def init_parameters(self, model):
        return _feature_parameters(model)

    def init_loss(self, batch, fs, ft):
        return {"fsp": sum(losses.fsp(*self.maps(fs, ft)))}


# RepDistiller's pretrain.py trains FT's paraphraser at 0.01 for these students.
_FT_LOW_INIT_LR = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                   "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")


class FT(_TwoStage):
    """Factor transfer (chapter 3 "DCD and RRD", a baseline): ``CE + 200·ft(translator(f_s), paraphraser(f_t))``.

    On the last stage maps. The init stage trains the teacher-side ``Paraphraser`` to
    reconstruct the teacher map (MSE), at lr 0.01 for ResNet/WRN students and the base lr
    otherwise (RepDistiller's rule); then it is frozen and the ``Translator`` trains with the
    student.
    """

    name = "ft"
    terms = ("ce", "ft")
    init_needs_student = False

    def __init__(self, ce_weight: float = 1.0, ft_weight: float = 200.0, k: float = 0.5, p: int = 1,
                 init_epochs: int = 30):
        super().__init__(ce_weight, init_epochs)
        self.ft_weight, self.k, self.p = ft_weight, k, p

    def setup(self, info):
        super().setup(info)
        c_s, c_t = info.feats_s.stages[-1].shape[1], info.feats_t.stages[-1].shape[1]
        self.paraphraser = losses.Paraphraser(c_t, self.k).requires_grad_(False)
        self.translator = losses.Translator(c_s, c_t, self.k)
        if info.arch_s in _FT_LOW_INIT_LR:
            self.init_lr = 0.01

    def init_parameters(self, model):
        return list(self.paraphraser.parameters())

    def init_loss(self, batch, fs, ft):
        f_t = ft.stages[-1].float()
        return {"reconstruction": F.mse_loss(self.paraphraser(f_t)[1], f_t)}

    def distill(self, batch, fs, ft, step):
        with torch.no_grad():
            factor_t = self.paraphraser.factor(ft.stages[-1])
        return {"ft": self.ft_weight * losses.ft(self.translator(fs.stages[-1]), factor_t, self.p)}


# ---------------------------------------------------------------------------------------------
# Contrastive and relational representation distillation (chapters 0 and 3)

class CRD(Distillation):
    """Contrastive representation distillation (chapter 0 "Foundations"; the reference of chapter 3).

    ``CE + 0.8·CRD`` on the pooled features: RepDistiller's memory bank + NCE (``nce_k``
    negatives of other classes, temperature ``nce_t``, memory momentum ``nce_m``), both
    embeddings trained. Paper vs code: this is the original CRD behind every published table,
    not distillers-HEAD's default FIFO/InfoNCE variant.
    """

    name = "crd"
    terms = ("ce", "crd")

    def __init__(self, ce_weight: float = 1.0, crd_weight: float = 0.8, feat_dim: int = 128, nce_k: int = 16384,
                 nce_t: float = 0.07, nce_m: float = 0.5):
        super().__init__(ce_weight)
        self.crd_weight, self.feat_dim, self.nce_k, self.nce_t, self.nce_m = crd_weight, feat_dim, nce_k, nce_t, nce_m

    def setup(self, info):
        super().setup(info)
        try:
            self.crd = losses.CRD(info.feats_s.pooled.shape[1], info.feats_t.pooled.shape[1], info.train_labels,
                                  self.feat_dim, self.nce_k, self.nce_t, self.nce_m)
        except ValueError as e:
            raise ValueError(f"method {self.name!r}: {e}; lower nce_k") from e

    def distill(self, batch, fs, ft, step):
        return {"crd": self.crd_weight * self.crd(fs.pooled, ft.pooled, batch.indices)}


class DCD(Distillation):
    """Discriminative and consistent distillation (chapter 3 "DCD and RRD"): ``CE + DCD``.

    In-batch InfoNCE on embedded pooled features with a learnable scale (``tau``, capped at
    ``max_tau``) plus ``alpha``·consistency, as distillers' Nov-2024 code (the version that
    runs DCD); both embeddings and τ, b are trained.
    """

    name = "dcd"
    terms = ("ce", "dcd")

    def __init__(self, ce_weight: float = 1.0, dcd_weight: float = 1.0, feat_dim: int = 128, alpha: float = 0.5,
                 tau: float = 1.0, max_tau: float = 10.0):
        super().__init__(ce_weight)
        self.dcd_weight, self.feat_dim, self.alpha, self.tau, self.max_tau = dcd_weight, feat_dim, alpha, tau, max_tau

    def setup(self, info):
        super().setup(info)
        self.dcd = losses.DCD(info.feats_s.pooled.shape[1], info.feats_t.pooled.shape[1], self.feat_dim,
                              self.alpha, self.tau, self.max_tau)

    def distill(self, batch, fs, ft, step):
        return {"dcd": self.dcd_weight * self.dcd(fs.pooled, ft.pooled)}


class RRD(Distillation):
    """Relational representation distillation (chapter 3 "DCD and RRD"): ``CE + RRD``.

    Relations of the embedded pooled features to a FIFO queue of ``nce_k`` teacher
    embeddings. Paper vs code: the defaults are distillers' Nov-2024 code, behind the published
    table: ``tau_s=0.04`` < ``tau_t=0.10`` (the sharper student the paper describes) and
    ``enqueue="after"``; HEAD's argparse flips the temperatures (0.1/0.02) and enqueues
    ``"before"``. As in the code the teacher embedding never learns: it is frozen here.
    """

    name = "rrd"
    terms = ("ce", "rrd")

    def __init__(self, ce_weight: float = 1.0, rrd_weight: float = 1.0, feat_dim: int = 128, nce_k: int = 16384,
                 tau_s: float = 0.04, tau_t: float = 0.10, enqueue: str = "after"):
        super().__init__(ce_weight)
        self.rrd_weight, self.feat_dim, self.nce_k = rrd_weight, feat_dim, nce_k
        self.tau_s, self.tau_t, self.enqueue = tau_s, tau_t, enqueue

    def setup(self, info):
        super().setup(info)
        self.rrd = losses.RRD(info.feats_s.pooled.shape[1], info.feats_t.pooled.shape[1], self.feat_dim,
                              self.nce_k, self.tau_s, self.tau_t, self.enqueue)
        self.rrd.embed_t.requires_grad_(False)

    def distill(self, batch, fs, ft, step):
        return {"rrd": self.rrd_weight * self.rrd(fs.pooled, ft.pooled)}


class ITRD(Distillation):
    """Information-theoretic representation distillation (chapter 5 "TTM and WTTM", the
    ``wttm+itrd`` row): ``CE + corr_weight·itrd_correlation(z, f_t; α) + mutual_weight·itrd_mutual``.

    ``z = Linear(d_s, d_t)(f_s)`` embeds the student's pooled features to the teacher's width
    (the teacher is never projected); the mutual term sees ``z`` only when the widths differ,
    as the TTM repository's ``ITLoss``. Its defaults are that code's (λ_corr 2, λ_mi 1,
    α 1.5); per pair α is 1.01 for same-architecture pairs (:func:`for_pair`). The original
    asks the networks for pre-activation features, but the pooled vector it reads (RepDistiller's
    ``feat[-1]``) is the same with or without them, so no pre-activation pass is needed.
    """

    name = "itrd"
    terms = ("ce", "itrd_corr", "itrd_mutual")

    def __init__(self, ce_weight: float = 1.0, corr_weight: float = 2.0, mutual_weight: float = 1.0,
                 alpha: float = 1.5):
        super().__init__(ce_weight)
        self.corr_weight, self.mutual_weight, self.alpha = corr_weight, mutual_weight, alpha

    def setup(self, info):
        super().setup(info)
        d_s, d_t = info.feats_s.pooled.shape[1], info.feats_t.pooled.shape[1]
        self.embed = nn.Linear(d_s, d_t)
        self.project_mutual = d_s != d_t

    def distill(self, batch, fs, ft, step):
        z = self.embed(fs.pooled)
        return {"itrd_corr": self.corr_weight * losses.itrd_correlation(z, ft.pooled, self.alpha),
                "itrd_mutual": self.mutual_weight * losses.itrd_mutual(z if self.project_mutual else fs.pooled,
                                                                        ft.pooled)}


# ---------------------------------------------------------------------------------------------
# SSKD (chapter 4)

class SSKD(Distillation):
    """SSKD (chapter 4 "SSKD"): ``0.1·CE + 0.9·KD + 2.7·TF + 10·SS`` on four rotated copies per image.

    Each network gets an ``SSKDHead`` on its pooled features. The teacher's is trained first,
    in an init stage of ``head_epochs`` (60 of 240) at ``head_lr`` 0.05 with ×0.1 at
    ``head_milestones`` (30, 45), all scaled to the run; then frozen. The student's trains
    with the student. Temperatures ``kd_T``, ``tf_T``, ``ss_T`` and the selective-transfer
    ratios are :func:`~kdlib.losses.sskd`'s.
    """

    name = "sskd"
    terms = ("ce", "kd", "tf", "ss")
    needs_rotations = True

    def __init__(self, ce_weight: float = 0.1, kd_weight: float = 0.9, tf_weight: float = 2.7,
                 ss_weight: float = 10.0, kd_T: float = 4.0, tf_T: float = 4.0, ss_T: float = 0.5,
                 ratio_tf: float = 1.0, ratio_ss: float = 0.75, head_epochs: int = 60, head_lr: float = 0.05,
                 head_milestones: tuple[int, ...] = (30, 45)):
        super().__init__(ce_weight)
        self.weights = {"kd": kd_weight, "tf": tf_weight, "ss": ss_weight}
        self.hparams = dict(kd_T=kd_T, tf_T=tf_T, ss_T=ss_T, ratio_tf=ratio_tf, ratio_ss=ratio_ss)
        self.head_epochs, self.head_lr, self.head_milestones = head_epochs, head_lr, tuple(head_milestones)

    def setup(self, info):
        super().setup(info)
        self.head_s = losses.SSKDHead(info.feats_s.pooled.shape[1])
        self.head_t = losses.SSKDHead(info.feats_t.pooled.shape[1]).requires_grad_(False)
        # the last epoch's steps, where the frozen teacher head's accuracy is measured (a resumed
        # run re-runs whole epochs, so these counts need no checkpoint)
        self._report_from = info.steps - (info.steps_per_epoch or info.steps) + 1
        self._head_acc: list[Tensor] = []

    def init_stage(self, model):
        self.head_t.requires_grad_(True)
        return InitStage(self.span(self.head_epochs), list(self.head_t.parameters()), self._head_loss,
                         lr=self.head_lr, milestones=tuple(self.span(m) for m in self.head_milestones),
                         needs_student=False)

    def _head_loss(self, batch, fs, ft):
        return {"ss_head": losses.sskd_head_loss(self.head_t(ft.pooled))}

    def forward(self, batch, fs, ft, step):
        with torch.no_grad():
            proj_t = self.head_t(ft.pooled)
            if step >= self._report_from:
                self._head_acc.append(losses.sskd_head_accuracy(proj_t))
        t = losses.sskd(fs.logits, ft.logits, self.head_s(fs.pooled), proj_t, batch.labels, **self.hparams)
        return {"ce": self.ce_weight * t.ce, **{k: w * getattr(t, k) for k, w in self.weights.items()}}

    def report(self):
        """``teacher_ss_acc``: % of the last epoch's rotated rows whose nearest unrotated image
        (cosine of the frozen teacher head's embeddings) is their own, as SSKD's code logs it."""
        return {"teacher_ss_acc": float(torch.stack(self._head_acc).mean())} if self._head_acc else {}


# ---------------------------------------------------------------------------------------------
# Registry

_register("vanilla", Method)
combo("cd+gkd", "CD + GKD with constant weights, CIFAR 'cd.ce.kdv2' (chapter 2 \"CD\").",
      {"cd": (CD, {}), "gkd": (GKD, {})})
combo("cd+gkd+edt", "CD + GKD under the Early Decay Teacher schedule, CD's CIFAR default "
      "(chapter 2 \"CD\"); see :class:`EDT`.", {"cd": (CD, {}), "gkd": (GKD, {})}, EDT)
combo("crd+kd", "CE + KD (weight 1) + 0.8·CRD (chapter 0 \"Foundations\").",
      {"crd": (CRD, {}), "kd": (KD, {"kd_weight": 1.0})})
combo("dcd+kd", "CE + KD (weight 1) + DCD (chapter 3 \"DCD and RRD\").",
      {"dcd": (DCD, {}), "kd": (KD, {"kd_weight": 1.0})})
combo("rrd+kd", "CE + KD (weight 1) + RRD (chapter 3 \"DCD and RRD\").",
      {"rrd": (RRD, {}), "kd": (KD, {"kd_weight": 1.0})})
combo("wttm+crd", "CE + WTTM + 0.8·CRD (chapter 5 \"TTM and WTTM\"); defaults are the "
      "README's vgg13→vgg8 example (γ=0.2, β=4), per pair via for_pair.",
      {"wttm": (WTTM, {"gamma": 0.2, "wttm_weight": 4.0}), "crd": (CRD, {})})
combo("wttm+itrd", "CE + WTTM + ITRD, the best row of the TTM tables (chapter 5 \"TTM and WTTM\"); defaults "
      "are vgg13→vgg8's (γ=0.1, β=0.5, α=1.01), per pair via for_pair; ITRD's weight is 1.",
      {"wttm": (WTTM, {"gamma": 0.1, "wttm_weight": 0.5}), "itrd": (ITRD, {"alpha": 1.01})})

# reported.pair_hparams names -> constructor names
_PAIR_PARAMS = {
    "dkd": {"beta": "beta"},
    "sd-kd": {"M": "scales"},
    "sd-dkd": {"M": "scales", "beta": "beta"},
    "sd-nkd": {"M": "scales", "gamma": "gamma"},
    "ttm": {"gamma": "gamma", "beta": "ttm_weight"},
    "wttm": {"gamma": "gamma", "beta": "wttm_weight"},
    "wttm+crd": {"gamma": "wttm__gamma", "beta": "wttm__wttm_weight"},
    "itrd": {"alpha_it": "alpha"},
    "wttm+itrd": {"gamma": "wttm__gamma", "beta": "wttm__wttm_weight", "alpha_it": "itrd__alpha"},
}


def list_methods() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(_METHODS)


def _constructor(name: str) -> Callable[..., Method]:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(list_methods())}")
    return _METHODS[name]


def defaults(name: str) -> dict:
    """The hyperparameters of method ``name`` with their defaults (what :func:`create` accepts)."""
    return {k: p.default for k, p in inspect.signature(_constructor(name)).parameters.items()}


def create(name: str, **overrides) -> Method:
    """Build a method by name with its paper defaults, overridden by keyword arguments.

    Each value is checked against its default's type and stored in that type (``T=2`` is
    ``T=2.0``, a list of scales a tuple), so that one setting always gives one record key.
    ``method.config`` is what a run record is keyed by: the name, every hyperparameter but
    those of ``key_neutral`` at their neutral value, and ``"schedule": "steps"`` for methods
    with a warm-up, a phase or an init stage (their epoch counts run in optimizer steps).

    Raises:
        ValueError: unknown method name, a hyperparameter the method does not have (the
            message lists the valid ones), or a value of the wrong type.
    """
    constructor = _constructor(name)
    signature = inspect.signature(constructor)
    valid = list(signature.parameters)
    bad = sorted(set(overrides) - set(valid))
    if bad:
        raise ValueError(f"method {name!r} has no hyperparameter {', '.join(map(repr, bad))}; "
                         f"valid: {', '.join(valid) or '(none)'}")
    overrides = {k: _coerce(name, k, v, signature.parameters[k].default) for k, v in overrides.items()}
    bound = signature.bind(**overrides)
    bound.apply_defaults()
    method = constructor(**overrides)
    neutral = getattr(constructor, "key_neutral", {})
    config = {"name": name, **{k: v for k, v in bound.arguments.items() if k not in neutral or v != neutral[k]}}
    if any(v for k, v in bound.arguments.items() if k.endswith(("_epochs", "_milestones"))):
        config["schedule"] = "steps"
    method.config = config
    return method


def _coerce(method: str, name: str, value, default):
    """``value`` in the type of ``default`` (int → float, list → tuple), or a ValueError naming
    the method, the hyperparameter and what it expects."""
    def fail(expected: str):
        raise ValueError(f"method {method!r}: hyperparameter {name}={value!r} has the wrong type; expected {expected}")

    if default is None or value is None:
        return value  # optional settings (grad_clip=None switches clipping off)
    if isinstance(default, bool):
        return value if isinstance(value, bool) else fail("True or False")
    if isinstance(default, float):
        value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else fail("a number")
    elif isinstance(default, int):
        value = value if isinstance(value, int) and not isinstance(value, bool) else fail("an int")
    elif isinstance(default, str):
        return value if isinstance(value, str) else fail("a string")
    elif isinstance(default, tuple):
        value = tuple(value) if isinstance(value, (list, tuple)) else fail("a list or tuple")
    _check_range(method, name, value)
    return value


# Ranges by the hyperparameter's own name (the part after ``part__`` in a combination).
_POSITIVE = {"T", "kd_T", "tf_T", "ss_T", "nce_t", "tau", "tau_s", "tau_t", "max_tau", "p", "k", "init_var",
             "head_lr", "grad_clip"}
_AT_LEAST_ONE = {"nce_k", "feat_dim", "hint_layer"}
_UNIT = {"nce_m": (0.0, 1.0, "in [0, 1)"), "ratio_tf": (0.0, 1.0, "in (0, 1]"), "ratio_ss": (0.0, 1.0, "in (0, 1]"),
         "cd_decay": (0.0, 1.0, "in (0, 1]")}


def _check_range(method: str, name: str, value) -> None:
    """Refuse values no paper's code could mean: NaN/Inf, non-positive temperatures and
    learning rates, negative weights, warm-ups or epoch counts, empty pyramids."""
    base = name.rpartition("__")[2]

    def fail(expected: str):
        raise ValueError(f"method {method!r}: hyperparameter {name}={value!r} is out of range; expected {expected}")

    if isinstance(value, tuple):
        if base.endswith("milestones") and not all(isinstance(v, int) and v >= 0 for v in value):
            fail("non-negative epoch counts")
        if base == "scales" and not (value and all(isinstance(v, int) and v >= 1 for v in value)):
            fail("a non-empty list of positive ints")
        return
    if isinstance(value, float) and not math.isfinite(value):
        fail("a finite number")
    if base in _POSITIVE and not value > 0:
        fail("a positive number")
    if base in _AT_LEAST_ONE and not value >= 1:
        fail("an int >= 1")
    if base in _UNIT:
        lo, hi, text = _UNIT[base]
        inside = (lo <= value < hi) if base == "nce_m" else (lo < value <= hi)
        if not inside:
            fail(f"a number {text}")
    if (base.endswith(("_weight", "_epochs")) or base in ("alpha", "beta", "gamma", "margin", "w_d", "w_a")) \
            and not value >= 0:
        fail("a number >= 0")


def for_pair(name: str, teacher: str, student: str, dataset: str = "cifar100", **overrides) -> Method:
    """:func:`create` with the hyperparameters the papers give for this teacher→student pair.

    E.g. TTM's γ and β, SDD's scales and DKD's β (:func:`kdlib.reported.pair_hparams`);
    ``overrides`` win over them. A pair the papers say nothing about gets the defaults.
    """
    from .reported import pair_hparams  # pandas: only loaded when per-pair values are asked for

    _constructor(name)
    names = _PAIR_PARAMS.get(name, {})
    table = pair_hparams(name, teacher, student, dataset)
    unmapped = sorted(set(table) - set(names))
    if unmapped:
        raise ValueError(f"method {name!r} has no hyperparameter for the reported {unmapped}")
    return create(name, **{**{names[k]: v for k, v in table.items()}, **overrides})
