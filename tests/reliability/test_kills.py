"""SIGKILL at chosen moments of a run, then resume: the same weights and records as no kill.

A child process runs ``vanilla`` and ``kd`` students together (3 epochs, a checkpoint every
epoch, one record per student) and is stopped by ``run_driver``'s pause hook at a chosen
moment, checked while it is frozen there, and killed with SIGKILL; a second process then runs
the same thing to completion. At no moment may a reader find a torn file where it looks.
"""
from __future__ import annotations

import time

import pytest
import torch

from kdlib.io import load_checkpoint
from kdlib.results import Store

from . import run_driver
from .run_driver import LABELS

# An epoch is 4 batches x 2 students = 8 student steps; checkpoints and records count from 1.
KILL_POINTS = {
    "during a step (epoch 2, batch 3)": ("step:13", [1]),
    "during epoch 2's checkpoint write": ("checkpoint:2", [1]),
    # the group's checkpoint is deleted only once all its records exist: here it is still there,
    # and the resumed run finishes the group from it without training again
    "during the second record's write": ("record:2", [3]),
}


def wait_until_paused(p, marker, timeout=300):
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert p.is_alive(), f"the run ended (exit code {p.exitcode}) before reaching its kill point"
        assert time.monotonic() < deadline, "the run did not reach its kill point"
        time.sleep(0.05)


def readable_state(root) -> list[int]:
    """Load every record and checkpoint where readers look for them; return the checkpoints' epochs."""
    for record in Store(root / "results").records():
        assert {"key", "config", "history", "last_acc", "best_acc"} <= record.keys()
    return [load_checkpoint(path)["epoch"] for path in (root / "checkpoints").glob("*.pt")]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_killed_run_resumes_to_the_uninterrupted_result(point, teacher_ckpt, reference, tmp_path):
    pause, checkpoint_epochs = KILL_POINTS[point]
    killed = run_driver.start(tmp_path, teacher_ckpt, [0], LABELS, pause)
    try:
        wait_until_paused(killed, tmp_path / "paused")
        assert readable_state(tmp_path) == checkpoint_epochs  # the last complete checkpoint, never a torn one
    finally:
        killed.kill()
        killed.join()
    assert readable_state(tmp_path) == checkpoint_epochs

    run_driver.finish(run_driver.start(tmp_path, teacher_ckpt, [0], LABELS))

    expected = {k: r for k, r in run_driver.records(reference).items() if r["config"]["seed"] == 0}
    assert run_driver.records(tmp_path) == expected
    reference_weights = run_driver.final_weights(reference)
    for name, state in run_driver.final_weights(tmp_path).items():
        assert state.keys() == reference_weights[name].keys()
        assert all(torch.equal(v, reference_weights[name][k]) for k, v in state.items()), name
    # what a kill leaves behind is hidden (a dot-file) and ignored: the visible files are the records
    visible = {p.name for p in (tmp_path / "results").iterdir() if not p.name.startswith(".")}
    assert visible == {f"{key}.json" for key in expected}
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith(".")]
