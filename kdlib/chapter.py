"""What every chapter notebook does in one line each: check its parameters, train or load its
runs, and close with a provenance footer (the book's conventions, chapter 0).

A chapter starts with::

    ch = Chapter("01_sdd", profile=profile, seeds=seeds, device=device, data_root=data_root,
                 results_dir=results_dir, force=force)

then asks for teachers (``ch.teacher("resnet20")``) and runs (``ch.run(pair, methods)``), and
ends with ``ch.footer()``.
"""
from __future__ import annotations

import ast
import os
import platform
import time
from pathlib import Path

import torch

from . import experiments, profiles, teachers
from .book import output_dirs
from .data import Dataset

HEADLESS_ENV = "KDLIB_HEADLESS"  # set by `make book`: no live widgets, progress bars off


def headless() -> bool:
    """True when papermill runs the notebook for the book (no one to move a slider)."""
    return os.environ.get(HEADLESS_ENV) == "1"


def _check(name: str, value, ok: bool, expected: str):
    if not ok:
        raise ValueError(f"parameter {name}={value!r} is invalid: expected {expected}")


def _seeds(value):
    """Seeds as papermill delivers them: a list, an int, or the text of a list (``-p seeds "[0, 1]"``
    arrives as the string ``"[0, 1]"``)."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"parameter seeds={value!r} is invalid: expected a list of ints such as [0, 1, 2]") from None
    return value


def check_injected_parameters() -> None:
    """Stop with a clear error when papermill injected a parameter the chapter does not have
    (papermill itself only warns, and the chapter would run with other values).

    The chapter's parameters are the names its ``parameters`` cell assigns (the first cell it
    ran); papermill's injected cell (``# Parameters``) follows it. Outside papermill, or in a
    kernel without IPython's input history, there is nothing to check.
    """
    try:
        history = get_ipython().user_ns.get("In", [])  # noqa: F821 (defined in IPython kernels)
    except NameError:
        return
    cells = [c for c in history if c.strip()]
    injected = [c for c in cells if c.lstrip().startswith("# Parameters")]
    if not cells or not injected:
        return
    known, given = _assigned(cells[0]), _assigned(injected[-1])
    unknown = sorted(given - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; this chapter's parameters are "
                         f"{', '.join(sorted(known))} (other profile settings: choose another profile)")


def _assigned(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


class Chapter:
    """The context of one chapter run: profile, data, teachers, runs and provenance.

    Args:
        name: chapter file name (``"00_foundations"``).
        profile: ``smoke``, ``quick``, ``cpu``, ``gpu`` or ``paper``.
        seeds: student seeds, a list or its text (``None``: the profile's).
        device: ``"cpu"``, ``"cuda"``... (``None``: the profile's).
        data_root: where datasets are looked for first (``None``: the standard places).
        results_dir: the run store (``None``: ``results/`` at the project root for the
            published profile, ``_build/<profile>/results`` for the others).
        force: retrain runs that already have a record.
        **overrides: other profile fields (``epochs``, ``pairs``...).

    Raises:
        ValueError: a parameter of the wrong type or value, naming it and what is expected.
    """

    def __init__(self, name: str, profile: str = "cpu", seeds=None, device=None, data_root=None,
                 results_dir=None, force: bool = False, **overrides):
        check_injected_parameters()
        _check("profile", profile, isinstance(profile, str) and profile in profiles.PROFILES,
               f"one of {', '.join(profiles.PROFILES)}")
        seeds = _seeds(seeds)
        _check("force", force, isinstance(force, bool), "True or False")
        _check("device", device, device is None or isinstance(device, str), "a string such as 'cpu' or 'cuda'")
        for key in ("data_root", "results_dir"):
            value = locals()[key]
            _check(key, value, value is None or isinstance(value, (str, os.PathLike)), "a path or None")
        self.name, self.force = name, force
        self.profile = profiles.get(profile, seeds=seeds, device=device, **overrides)
        if self.profile.device != "cpu":
            from .train import resolve_device
            resolve_device(self.profile.device)
        self.data_root = data_root
        self.results_dir = Path(results_dir) if results_dir else output_dirs(self.profile.name)[1]
        self.progress = not headless()
        self.records: list[dict] = []
        self.teachers: dict[str, teachers.Teacher] = {}
        self._dataset: Dataset | None = None
        self._t0 = time.perf_counter()

    @property
    def dataset(self) -> Dataset:
        """The profile's dataset with its subsets (loaded once)."""
        if self._dataset is None:
            self._dataset = self.profile.load_data(self.data_root)
        return self._dataset

    def teacher(self, arch: str, train: bool = True) -> teachers.Teacher:
        """The profile's teacher ``arch``, trained on first use (unless ``train=False``), then loaded."""
        if arch not in self.teachers:
            self.teachers[arch] = teachers.get(arch, self.profile, data_root=self.data_root,
                                               results_dir=self.results_dir, progress=self.progress,
                                               dataset=self._dataset, train=train)
        return self.teachers[arch]

    def run(self, pair: tuple[str, str], methods, seeds=None, train: bool = True) -> list[dict]:
        """Train-or-load ``methods`` on ``pair = (teacher, student)`` over the seeds.

        ``methods``: names, or ``{label: {"method": name, **hyperparameters}}``. All runs of
        one seed train together (one teacher forward, identical batches). With ``train=False``
        nothing is trained: only stored runs come back (and the teacher must be stored).
        Returns records, each with ``label`` and ``pair`` (``"resnet20→resnet8"``) added.
        """
        teacher_arch, student_arch = pair
        for spec in experiments.as_specs(methods).values():  # bad settings fail before any training
            experiments.build_method(self.profile, teacher_arch, student_arch, spec)
        teacher = self.teacher(teacher_arch, train=train)
        recs = experiments.run(self.profile, teacher, student_arch, methods, dataset=self._dataset,
                               data_root=self.data_root, results_dir=self.results_dir,
                               seeds=seeds, force=self.force, progress=self.progress, train=train)
        for r in recs:
            r["pair"] = f"{teacher_arch}→{student_arch}"
        self.records.extend(recs)
        return recs

    def controls(self, runs) -> list[dict]:
        """Train-or-load the control runs of ``runs`` (a :class:`kdlib.chapters.ChapterRuns`) on
        each of the profile's two pairs that has any; records as :meth:`run` returns them."""
        out = []
        for index, pair in enumerate(self.profile.pairs[:2]):
            specs = runs.control_runs(self.profile, index)
            if specs:
                out += self.run(pair, specs)
        return out

    def cost(self, pair: tuple[str, str], spec: dict) -> dict:
        """Seconds per epoch and peak memory (MB) of training one student of ``spec``
        (``{"method": name, **hyperparameters}``) on ``pair`` with the profile's data and
        precision, timed over the second of two epochs (:func:`kdlib.experiments.cost`)."""
        teacher_arch, student_arch = pair
        return experiments.cost(self.profile, self.teacher(teacher_arch, train=False), student_arch, spec, self.dataset,
                                results_dir=self.results_dir)

    def footer(self) -> str:
        """Markdown provenance: profile, device, versions, wall time, teachers and record ids."""
        keys = sorted({r["key"] for r in self.records})
        devices = sorted({r["device"] for r in self.records}) or [self.profile.device]
        train_s = sum(r["wall_time"] for r in self.records)
        lines = [
            f"**Provenance.** Profile `{self.profile.name}` ({self.profile.dataset}, "
            f"train subset {self.profile.train_size or 'all'}, test subset {self.profile.test_size or 'all'}, "
            f"{self.profile.epochs} student epochs, seeds {list(self.profile.seeds)}); device {', '.join(devices)}; "
            f"torch {torch.__version__}, Python {platform.python_version()}.",
            f"This execution took {time.perf_counter() - self._t0:.0f} s; the {len(keys)} runs it shows took "
            f"{train_s:.0f} s of training when they were recorded.",
        ]
        for t in self.teachers.values():
            lines.append(f"Teacher `{t.arch}`: {t.test_acc:.2f}% test accuracy, checkpoint `{t.checkpoint.name}` "
                         f"(SHA-256 `{t.sha256[:12]}`).")
        if keys:
            lines.append("Records (in `results/`): " + ", ".join(f"`{k}`" for k in keys) + ".")
        return "\n\n".join(lines)
