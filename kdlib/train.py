"""The trainer: teacher training, distillation, and several students on one teacher forward.

One code path for CPU and CUDA (chapter 0, "the protocol"). The data lives on the device
(:class:`~kdlib.data.DeviceLoader`); each step runs the teacher once under ``no_grad`` in
eval mode, then every student's forward, its method's loss terms (float32), backward and
SGD step. Metrics stay on the device until the epoch ends, so a CUDA step never waits for
the host. Checkpoints are written atomically every ``checkpoint_every`` epochs; ``resume``
continues from the last one and ends with the same weights as an uninterrupted run.

Entry points: :func:`fit` (a network from scratch: teachers, vanilla students),
:func:`distill` (one student), :func:`distill_many` (several students, the same batches).
"""
from __future__ import annotations

import copy
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .data import Dataset, DeviceLoader
from .io import CheckpointError, encode_ints, load_checkpoint, save_checkpoint
from .methods import Batch, Method, SetupInfo
from .models import Features, arch_of

LOW_LR_ARCHS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")


def step_factor(t: int, milestones, gamma: float) -> float:
    """RepDistiller's step decay: ``gamma^(number of milestones m with t > m)``, ``t`` from 1
    (epochs of a recipe, steps of an init stage)."""
    return gamma ** sum(t > m for m in milestones)


@dataclass(frozen=True)
class Recipe:
    """An optimisation recipe (SGD with step decay). Epochs count from 1.

    The learning rate of epoch ``e`` is ``lr · gamma^(number of milestones m with e > m)``,
    RepDistiller's rule (epoch 151 is the first at 0.1x in the CRD protocol).
    """

    epochs: int = 240
    batch_size: int = 64
    lr: float = 0.05
    low_lr: float = 0.01          # for MobileNetV2 / ShuffleNets, as every repo hard-codes
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (150, 180, 210)
    gamma: float = 0.1

    def lr_for(self, model: nn.Module) -> float:
        """Base learning rate of ``model``: ``low_lr`` for the zoo's MobileNetV2 and ShuffleNets
        (the architecture is read from the model itself, see :func:`kdlib.models.arch_of`)."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"lr_for takes the network (its architecture is read from it), got {model!r}")
        return self.low_lr if arch_of(model) in LOW_LR_ARCHS else self.lr

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of the base learning rate in ``epoch`` (1-based)."""
        return step_factor(epoch, self.milestones, self.gamma)

    def scaled(self, epochs: int, batch_size: int | None = None) -> "Recipe":
        """The same recipe over ``epochs`` epochs, milestones moved proportionally."""
        ms = tuple(max(1, round(m * epochs / self.epochs)) for m in self.milestones)
        return replace(self, epochs=epochs, milestones=ms, batch_size=batch_size or self.batch_size)


RECIPES = {
    "crd": Recipe(),                                    # RepDistiller / mdistiller / TTM / DCD / RRD / SDD
    "sskd": Recipe(),                                   # same numbers; its images count 4x per batch
    "cd": Recipe(epochs=200, batch_size=128, lr=0.1, low_lr=0.1, milestones=(60, 120, 160), gamma=0.2),
}


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or Inf; the run stopped and the last checkpoint is kept."""


@dataclass
class Student:
    """One network being trained, with its method and (built by the trainer) optimizer.

    Attributes:
        name: key in the results (e.g. ``"kd"``).
        model: the student network (a zoo model knows its architecture, which picks the low
            learning rate of MobileNetV2/ShuffleNets).
        method: a :class:`~kdlib.methods.Method` (``vanilla`` for plain training).
    """

    name: str
    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer | None = field(default=None, repr=False)
    step_module: nn.Module | None = field(default=None, repr=False)
    rng: dict | None = field(default=None, repr=False)
    history: list[dict] = field(default_factory=list)
    predictions: dict | None = field(default=None, repr=False)  # last epoch's, encoded (kdlib.io.encode_ints)


@dataclass
class Options:
    """How to run (not what to learn): device, precision, checkpoints, progress.

    Attributes:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        amp: bf16 autocast (default: on for CUDA, off for CPU).
        channels_last: NHWC memory format for images and models (default on).
        compile: wrap each model's forward in ``torch.compile``.
        checkpoint: path of the checkpoint file (``None``: no checkpoints).
        checkpoint_every: epochs between checkpoints (the last epoch is always saved).
        resume: continue from ``checkpoint`` if it exists.
        progress: show tqdm bars.
        eval_batch: batch size of the test-set evaluation.
        callbacks: ``f(epoch, {student name: metrics})`` called after every epoch.
    """

    device: str = "cpu"
    amp: bool | None = None
    channels_last: bool = True
    compile: bool = False
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 1
    resume: bool = False
    progress: bool = True
    eval_batch: int = 1000
    callbacks: list[Callable[[int, dict], None]] = field(default_factory=list)


def resolve_device(device: str | torch.device) -> torch.device:
    """Check that ``device`` exists here; a clear error otherwise."""
    valid = "valid: 'cpu', 'cuda', 'cuda:<index>'"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unsupported device {device!r}; {valid}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {str(device)!r}; {valid}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available on this machine; use 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


# ---------------------------------------------------------------------------------------------
# Public entry points

def fit(model: nn.Module, dataset: Dataset, recipe: Recipe, *, seed: int = 0,
        options: Options | None = None) -> dict:
    """Train a network from scratch with cross-entropy (teachers, vanilla students).

    Returns the run summary of :func:`distill_many` for this network.
    """
    from .methods import create
    return distill_many([Student("vanilla", model, create("vanilla"))], None, dataset, recipe,
                        seed=seed, options=options)["vanilla"]


def distill(student: nn.Module, teacher: nn.Module, method: Method, dataset: Dataset, recipe: Recipe, *,
            seed: int = 0, options: Options | None = None) -> dict:
    """Distil ``teacher`` into ``student`` with ``method``; returns the run summary."""
    return distill_many([Student("student", student, method)], teacher, dataset, recipe,
                        seed=seed, options=options)["student"]


def distill_many(students: list[Student], teacher: nn.Module | None, dataset: Dataset, recipe: Recipe, *,
                 seed: int = 0, options: Options | None = None) -> dict[str, dict]:
    """Train several students on identical batches with one teacher forward per step.

    Each student has its own method, optimizer and learning-rate rule; all see the same
    images in the same order (the loader's randomness depends only on ``seed``), so
    ``distill_many([a, b])`` gives each the result it would get alone with that seed.
    Students whose methods need a different input or teacher (SSKD's rotated copies, CD's
    teacher with BatchNorm in train mode) are trained in separate groups, one after the other,
    on the same batches.

    Returns:
        ``{student name: summary}``; a summary holds ``history`` (per epoch: ``epoch``,
        ``lr``, ``test_acc`` in %, mean loss ``terms``, ``seconds``, ``images_per_s``),
        ``last_acc``, ``best_acc``, ``best_epoch``, ``wall_time`` (s), ``images_per_s``,
        ``num_classes`` and ``predictions``: the last epoch's predicted class of every test
        image, encoded (:func:`kdlib.results.predictions` decodes it).
    """
    opts = options or Options()
    if not (isinstance(recipe.epochs, int) and recipe.epochs >= 1):
        raise ValueError(f"recipe.epochs must be an int >= 1, got {recipe.epochs!r}")
    if teacher is not None:
        _check_finite_teacher(teacher)
    groups: dict[tuple, list[Student]] = {}
    for s in students:
        groups.setdefault((s.method.needs_rotations, s.method.teacher_train_mode), []).append(s)
    out = {}
    for i, group in enumerate(groups.values()):
        ckpt = opts.checkpoint
        if ckpt and len(groups) > 1:
            ckpt = Path(ckpt).with_name(f"{Path(ckpt).stem}.group{i}{Path(ckpt).suffix}")
        out.update(_Run(group, teacher, dataset, recipe, seed, replace(opts, checkpoint=ckpt)).train())
    return {s.name: out[s.name] for s in students}


# ---------------------------------------------------------------------------------------------
# The run

class _Run:
    def __init__(self, students, teacher, dataset, recipe, seed, opts: Options):
        names = [s.name for s in students]
        if len(set(names)) != len(names):
            raise ValueError(f"student names must be unique, got {names}")
        # CD's code runs the teacher's BatchNorm in train mode: that teacher changes, so use a copy.
        self.teacher_train_mode = students[0].method.teacher_train_mode
        if self.teacher_train_mode and teacher is not None:
            teacher = copy.deepcopy(teacher)
        self.students, self.teacher = students, teacher
        self.dataset, self.recipe = dataset, recipe
        self.seed, self.opts = seed, opts
        self.device = resolve_device(opts.device)
        self.amp = opts.amp if opts.amp is not None else self.device.type == "cuda"
        self.rank, self.world = _dist_info()
        self.needs_teacher = any(s.method.needs_teacher for s in students)
        if self.needs_teacher and teacher is None:
            raise ValueError(f"methods {[s.method.__class__.__name__ for s in students if s.method.needs_teacher]} need a teacher")
        self.preact = any(s.method.needs_preact for s in students)
        self.loader = DeviceLoader(dataset.train, recipe.batch_size, self.device, seed=seed,
                                   rotations=students[0].method.needs_rotations,
                                   channels_last=opts.channels_last, rank=self.rank, world_size=self.world)
        self.test_loader = DeviceLoader(dataset.test, opts.eval_batch, self.device, augment=False,
                                        channels_last=opts.channels_last)
        self.start_epoch = 1

    # -- setup -------------------------------------------------------------------------------
    def _prepare(self):
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        torch.manual_seed(self.seed)
        fmt = torch.channels_last if self.opts.channels_last else torch.preserve_format
        if self.teacher is not None:
            self.teacher.to(self.device, memory_format=fmt).eval().requires_grad_(False)
        probe = next(iter(self.loader.iter_epoch(0)))[0][:2]
        with torch.no_grad():
            ft = self.teacher.eval().forward_features(probe, preact=self.preact) if self.needs_teacher else None
        for s in self.students:
            # Each student draws from its own generator, seeded alike: what its method samples
            # (module initialisation, CRD's negatives...) does not depend on who trains beside it.
            torch.manual_seed(self.seed)
            s.model.to(self.device, memory_format=fmt)
            with torch.no_grad():
                fs = s.model.eval().forward_features(probe, preact=self.preact)
            s.method.setup(SetupInfo(fs, ft, self.dataset.num_classes, self.dataset.train.labels.to(self.device),
                                     steps=self.recipe.epochs * len(self.loader), steps_per_epoch=len(self.loader),
                                     lr=self.recipe.lr_for(s.model), classifier_s=s.model.classifier,
                                     classifier_t=self.teacher.classifier if self.teacher is not None else None,
                                     arch_s=arch_of(s.model), arch_t=arch_of(self.teacher)))
            s.method.to(self.device)
            s.step_module = _StepModule(s.model, s.method)
            if self.world > 1:
                s.step_module = nn.parallel.DistributedDataParallel(s.step_module, find_unused_parameters=True,
                                                                    broadcast_buffers=False)
            params = [p for p in s.step_module.parameters() if p.requires_grad]
            s.optimizer = torch.optim.SGD(params, lr=self.recipe.lr_for(s.model), momentum=self.recipe.momentum,
                                          weight_decay=self.recipe.weight_decay,
                                          fused=self.device.type in ("cuda", "cpu"))
            if self.opts.compile:
                s.model.forward_features = torch.compile(s.model.forward_features)
            s.rng = _rng_state(self.device)

    # -- checkpoints --------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        return {"epoch": epoch,
                "students": {s.name: {"model": s.model.state_dict(), "method": s.method.state_dict(),
                                      "optimizer": s.optimizer.state_dict(), "history": s.history, "rng": s.rng,
                                      "predictions": s.predictions}
                             for s in self.students},
                "teacher": self.teacher.state_dict() if self.teacher_train_mode and self.teacher is not None else None}

    def _maybe_resume(self):
        path = self.opts.checkpoint
        if not (self.opts.resume and path):
            return
        try:
            state = load_checkpoint(path, map_location=self.device)
        except CheckpointError:
            if Path(path).exists():
                raise
            return  # none, or just removed by a finished run of the same config: start afresh
        try:
            for s in self.students:
                if s.name not in state["students"]:
                    raise ValueError(f"it has no student {s.name!r} (it has {list(state['students'])})")
                st = state["students"][s.name]
                s.model.load_state_dict(st["model"])
                s.method.load_state_dict(st["method"])
                s.optimizer.load_state_dict(st["optimizer"])
                s.history = list(st["history"])
                s.rng = {k: v.cpu() for k, v in st["rng"].items()}
                s.predictions = st.get("predictions")
            if state.get("teacher") is not None:
                self.teacher.load_state_dict(state["teacher"])
            epoch = state["epoch"]
            if not (isinstance(epoch, int) and 0 <= epoch <= self.recipe.epochs):
                raise ValueError(f"its epoch {epoch!r} is not in 0..{self.recipe.epochs}")
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"resume checkpoint {str(path)!r} does not belong to this run or is malformed "
                                  f"({type(e).__name__}: {e}); delete it to start afresh") from None
        self.start_epoch = epoch + 1

    def _save(self, epoch: int):
        if self.opts.checkpoint and self.rank == 0:
            save_checkpoint(self.opts.checkpoint, self._state(epoch))

    # -- the loop -----------------------------------------------------------------------------
    def train(self) -> dict[str, dict]:
        self._prepare()
        self._maybe_resume()
        if self.start_epoch == 1:
            for s in self.students:
                self._init_stage(s)
        bar = _progress(range(self.start_epoch, self.recipe.epochs + 1), self.opts.progress and self.rank == 0,
                        desc="epochs", initial=self.start_epoch - 1, total=self.recipe.epochs)
        for epoch in bar:
            metrics = self._epoch(epoch)
            if self.opts.progress:
                bar.set_postfix({s: f"{m['test_acc']:.2f}" for s, m in metrics.items()})
            if epoch % self.opts.checkpoint_every == 0 or epoch == self.recipe.epochs:
                self._save(epoch)
            for cb in self.opts.callbacks:
                cb(epoch, metrics)
        return {s.name: {**summarize(s.history), "num_classes": self.dataset.num_classes,
                         "predictions": s.predictions, **_reported(s.method)} for s in self.students}

    def _init_stage(self, s: Student) -> None:
        """Run the method's pre-training stage with its own optimizer (epochs -1, -2, ... of the loader)."""
        with _own_rng(s, self.device):
            self._run_init_stage(s)

    def _run_init_stage(self, s: Student) -> None:
        stage = s.method.init_stage(s.model)
        if stage is None or stage.steps == 0:
            return
        opt = torch.optim.SGD(stage.parameters, lr=stage.lr, momentum=self.recipe.momentum,
                              weight_decay=self.recipe.weight_decay)
        s.model.train()
        bar = _progress(range(1, stage.steps + 1), self.opts.progress and self.rank == 0, desc=f"{s.name} init")
        for step, (images, labels, idx) in zip(bar, self._init_batches()):
            for group in opt.param_groups:
                group["lr"] = stage.lr * step_factor(step, stage.milestones, stage.gamma)
            ft = self._teacher_forward(images)
            with self._autocast():
                fs = s.model.forward_features(images, preact=self.preact) if stage.needs_student else None
                terms = stage.loss(Batch(images, labels, idx), fs, ft)
            stats = _TermStats()
            stats.add(terms, step)
            stats.raise_if_nonfinite(f"{s.name} (init stage)", 1 + (step - 1) // len(self.loader))
            opt.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            opt.step()

    def _init_batches(self):
        """Batches of loader epochs -1, -2, ... (the main run's epochs count from 1)."""
        epoch = 0
        while True:
            epoch -= 1
            yield from self.loader.iter_epoch(epoch)

    def _epoch(self, epoch: int) -> dict[str, dict]:
        for s in self.students:
            for group in s.optimizer.param_groups:
                group["lr"] = self.recipe.lr_for(s.model) * self.recipe.lr_factor(epoch)
            s.model.train()
            s.method.train()
        stats = [_TermStats() for _ in self.students]
        clocks = [_Clock(self.device) for _ in self.students]
        check_each_step = self.device.type == "cpu"   # free on CPU; on CUDA once per epoch (no host sync)
        n_images, t0 = 0, time.perf_counter()
        steps = _progress(self.loader.iter_epoch(epoch), self.opts.progress and self.rank == 0,
                          desc=f"epoch {epoch}", total=len(self.loader), leave=False)
        first_step = (epoch - 1) * len(self.loader) + 1  # global optimizer steps count from 1
        for step, (images, labels, idx) in enumerate(steps):
            batch = Batch(images, labels, idx)
            ft = self._teacher_forward(images)
            for s, st, clock in zip(self.students, stats, clocks):
                with clock, _own_rng(s, self.device):
                    terms = self._student_step(s, batch, ft, first_step + step)
                st.add(terms, step)
                if check_each_step:
                    st.raise_if_nonfinite(s.name, epoch)
            n_images += len(labels)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the epoch's time includes the queued GPU work
        seconds = time.perf_counter() - t0
        for s, st in zip(self.students, stats):
            st.raise_if_nonfinite(s.name, epoch)
        return self._finish_epoch(epoch, stats, clocks, len(self.loader), seconds, n_images * self.world)

    def _autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _teacher_forward(self, images: Tensor) -> Features | None:
        if not self.needs_teacher:
            return None
        self.teacher.train(self.teacher_train_mode)
        with torch.no_grad(), self._autocast():
            return self.teacher.forward_features(images, preact=self.preact)

    def _student_step(self, s: Student, batch: Batch, ft, step: int) -> dict[str, Tensor]:
        with self._autocast():
            terms = s.step_module(batch, ft, step, self.preact)
        loss = sum(terms.values())
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.method.grad_clip is not None:  # SDD's trainer clips the global norm at 40
            nn.utils.clip_grad_norm_([p for g in s.optimizer.param_groups for p in g["params"]], s.method.grad_clip)
        s.optimizer.step()
        return terms

    def _finish_epoch(self, epoch, stats, clocks, n_steps, seconds, n_images) -> dict[str, dict]:
        out = {}
        for s, st, clock in zip(self.students, stats, clocks):
            _check_finite_weights(s, epoch)
            preds = predict(s.model, self.test_loader, self.amp)
            metrics = {"epoch": epoch, "lr": s.optimizer.param_groups[0]["lr"],
                       "test_acc": accuracy(preds, self.test_loader.labels),
                       "terms": {k: float(v) / n_steps for k, v in st.sums.items()},
                       "seconds": seconds, "images_per_s": n_images / seconds,
                       "student_seconds": clock.seconds()}
            s.history.append(metrics)
            if epoch == self.recipe.epochs:
                s.predictions = encode_ints(preds)
            out[s.name] = metrics
        return out


class _Clock:
    """Time spent in one student's steps (its forward, losses, backward and update, not the
    shared teacher forward): perf_counter on CPU, CUDA events read once at the epoch's end."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.spans: list = []
        self.total = 0.0

    def __enter__(self):
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.start = time.perf_counter()

    def __exit__(self, *exc):
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.spans.append((self.start, end))
        else:
            self.total += time.perf_counter() - self.start

    def seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.spans) / 1000
        return self.total


class _TermStats:
    """Per-term sums over an epoch and each term's first non-finite step, kept on the device."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.first_bad: dict[str, Tensor] = {}

    def add(self, terms: dict[str, Tensor], step: int) -> None:
        for k, v in terms.items():
            v = v.detach().float()
            self.sums[k] = self.sums.get(k, 0) + v
            bad = ~torch.isfinite(v)
            prev = self.first_bad.get(k)
            self.first_bad[k] = torch.where(bad, step, -1) if prev is None else torch.where((prev < 0) & bad, step, prev)

    def raise_if_nonfinite(self, student: str, epoch: int) -> None:
        for k, v in self.first_bad.items():
            if int(v) >= 0:
                raise NonFiniteLossError(f"student {student!r}: loss term {k!r} became NaN/Inf at epoch {epoch}, "
                                         f"step {int(v)}; the run stopped and its last checkpoint is kept")


def _check_finite_teacher(teacher: nn.Module) -> None:
    bad = [name for name, p in teacher.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"the teacher's weights hold NaN/Inf ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); "
                         "retrain it or load another checkpoint")


def _check_finite_weights(s: Student, epoch: int) -> None:
    """Stop before a student whose weights hold NaN/Inf is evaluated, checkpointed or recorded."""
    bad = [name for name, p in s.model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise NonFiniteLossError(f"student {s.name!r}: weights became NaN/Inf in epoch {epoch} ({', '.join(bad[:3])}"
                                 f"{' ...' if len(bad) > 3 else ''}); the run stopped and its last checkpoint is kept")


class _StepModule(nn.Module):
    """Student + method as one module, so DDP sees every trainable parameter of a student."""

    def __init__(self, model: nn.Module, method: Method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, batch: Batch, ft: Features | None, step: int, preact: bool) -> dict[str, Tensor]:
        fs = self.model.forward_features(batch.images, preact=preact)
        return self.method(batch, fs, ft, step)


@torch.no_grad()
def predict(model: nn.Module, loader: DeviceLoader, amp: bool = False) -> Tensor:
    """Predicted class of every image of ``loader`` (an unshuffled, unaugmented loader), in
    split order: int64 ``(N,)`` on the loader's device. ``model`` is put in eval mode."""
    was_training = model.training
    model.eval()
    ctx = torch.autocast(loader.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    with ctx:
        preds = torch.cat([model(images).argmax(1) for images, _, _ in loader.iter_epoch(0)])
    model.train(was_training)
    return preds


def evaluate(model: nn.Module, loader: DeviceLoader, amp: bool = False) -> float:
    """Top-1 accuracy in % of ``model`` (put in eval mode) over one pass of ``loader``."""
    return accuracy(predict(model, loader, amp), loader.labels)


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in % of ``(N,)`` predicted classes against ``(N,)`` labels."""
    return 100.0 * int((predictions == labels).sum()) / len(labels)


def _reported(method: Method) -> dict:
    """``{"method_report": ...}`` when the method measured something of itself (SSKD), else ``{}``."""
    report = method.report()
    return {"method_report": report} if report else {}


def summarize(history: list[dict]) -> dict:
    """Last/best accuracy, timing and throughput of a run from its per-epoch history.

    ``wall_time`` (s) and ``images_per_s`` are the whole group's (all students trained together
    and the shared teacher forward); ``student_time`` (s) and ``student_images_per_s`` count
    this student's own steps only, the cost of the method itself.
    """
    best = max(history, key=lambda h: h["test_acc"])
    seconds = sum(h["seconds"] for h in history)
    images = sum(h["images_per_s"] * h["seconds"] for h in history)
    own = sum(h["student_seconds"] for h in history)
    return {"history": history, "last_acc": history[-1]["test_acc"], "best_acc": best["test_acc"],
            "best_epoch": best["epoch"], "wall_time": seconds, "images_per_s": images / seconds if seconds else math.nan,
            "student_time": own, "student_images_per_s": images / own if own else math.nan}


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


@contextmanager
def _own_rng(s: Student, device: torch.device):
    """Run with the student's own random state, then keep where it got to."""
    torch.set_rng_state(s.rng["cpu"])
    if "cuda" in s.rng:
        torch.cuda.set_rng_state(s.rng["cuda"], device)
    try:
        yield
    finally:
        s.rng = _rng_state(device)


def _progress(it, enabled: bool, **kw):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, **kw)


def _dist_info() -> tuple[int, int]:
    """(rank, world size): from the initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
