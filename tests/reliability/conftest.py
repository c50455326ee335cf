"""Shared fixtures: a fixed teacher, and the uninterrupted, sequential run every other run must equal."""
from __future__ import annotations

import pytest

from . import run_driver


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "resnet8.pt"
    run_driver.make_teacher(path)
    return path


@pytest.fixture(scope="session")
def reference(tmp_path_factory, teacher_ckpt):
    """The root of one uninterrupted run of ``run_driver.LABELS`` over ``run_driver.SEEDS``, in one process."""
    root = tmp_path_factory.mktemp("reference")
    run_driver.finish(run_driver.start(root, teacher_ckpt, run_driver.SEEDS, run_driver.LABELS))
    return root
