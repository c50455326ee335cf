"""A tiny deterministic distillation run that the reliability tests start in child processes.

:func:`run` trains ``resnet8`` students (fp32, one CPU thread, checkpoint every epoch) from a
fixed ``resnet8`` teacher on a small synthetic dataset through :func:`kdlib.experiments.run`,
the path the book takes, and saves each student's final weights beside the results, so a
test can compare both the records and the weights with those of another run.

``pause="<where>:<n>"`` stops the child the n-th time it reaches ``<where>`` and waits there
to be killed (after creating the file ``paused``):

- ``step``: a student's training step is about to run;
- ``checkpoint`` / ``record``: a checkpoint / run record is being written and half of its
  bytes are on disk (the write is cut short as a kill in the middle of it would leave it).

The hook patches this child process only; kdlib has no test-only code.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import time
from pathlib import Path

import torch

from kdlib import experiments, profiles, teachers, train
from kdlib.io import save_checkpoint
from kdlib.models import create_model

PROFILE = profiles.get("smoke", dataset_kwargs=dict(num_classes=10, train_size=64, test_size=32, channels=1),
                       epochs=3, batch_size=16, amp=False)
LABELS, SEEDS = ["vanilla", "kd"], [0, 1]  # the runs of the reference
TIMING = {"seconds", "images_per_s", "wall_time", "student_seconds", "student_time", "student_images_per_s",
          "finished", "env"}  # what differs between two identical runs


def make_teacher(path: Path) -> None:
    """Save a fixed (untrained, seeded) resnet8 teacher in RepDistiller's format."""
    torch.manual_seed(0)
    save_checkpoint(path, {"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict()})


def run(root: Path, teacher_ckpt: Path, seeds: list[int], labels: list[str], pause: str | None = None) -> None:
    """Train-or-load ``labels`` (method names) for ``seeds`` with ``root/results`` as the store.

    Checkpoints go to ``root/checkpoints`` (kdlib's place beside ``results/``), final student
    weights to ``root/weights/<label>-<seed>.pt``.
    """
    torch.set_num_threads(1)
    if pause:
        _install_pause(pause, root / "paused")
    _save_final_weights(root / "weights")
    teacher = teachers.from_checkpoint("resnet8", teacher_ckpt, num_classes=10, in_channels=1)
    experiments.run(PROFILE, teacher, "resnet8", labels, results_dir=root / "results", seeds=seeds,
                    progress=False)


def start(root: Path, teacher_ckpt: Path, seeds: list[int], labels: list[str],
          pause: str | None = None) -> mp.Process:
    """:func:`run` in a new (spawned) process, ended with the test session if still running."""
    p = mp.get_context("spawn").Process(target=run, args=(root, teacher_ckpt, seeds, labels, pause), daemon=True)
    p.start()
    return p


def finish(p: mp.Process, timeout: float = 300) -> None:
    p.join(timeout)
    assert p.exitcode == 0, f"run process ended with exit code {p.exitcode}"


def records(root: Path) -> dict[str, dict]:
    """``{key: comparable record}`` of every record in ``root/results``."""
    return {f.stem: comparable(json.loads(f.read_text())) for f in (root / "results").glob("*.json")}


def final_weights(root: Path) -> dict[str, dict]:
    return {f.name: torch.load(f, weights_only=True) for f in (root / "weights").glob("*.pt")}


def comparable(record: dict) -> dict:
    """A record without the fields that differ between two identical runs (timing, environment)."""
    out = {k: v for k, v in record.items() if k not in TIMING}
    out["history"] = [{k: v for k, v in h.items() if k not in TIMING} for h in record["history"]]
    return out


def _save_final_weights(folder: Path) -> None:
    """Spy on ``distill_many`` (behaviour unchanged) to keep the weights each student ends with."""
    distill_many = experiments.distill_many

    def spy(students, *args, seed, **kwargs):
        out = distill_many(students, *args, seed=seed, **kwargs)
        folder.mkdir(parents=True, exist_ok=True)
        for s in students:
            torch.save(s.model.state_dict(), folder / f"{s.name}-{seed}.pt")
        return out

    experiments.distill_many = spy


def _install_pause(spec: str, marker: Path) -> None:
    where, n = spec.split(":")
    count = 0

    def reached() -> bool:
        nonlocal count
        count += 1
        return count == int(n)

    def wait_to_be_killed():
        marker.touch()
        time.sleep(600)
        raise SystemExit("the test did not kill this process")

    if where == "step":
        student_step = train._Run._student_step

        def step(self, *args):
            if reached():
                wait_to_be_killed()
            return student_step(self, *args)

        train._Run._student_step = step
        return
    suffix = {"checkpoint": "pt", "record": "json"}[where]
    fsync = os.fsync

    def cut_short(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if re.search(rf"\.{suffix}\b", Path(name).name) and reached():
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            wait_to_be_killed()
        fsync(fd)

    os.fsync = cut_short
