"""Faults: a full disk, damaged or foreign checkpoints, a teacher whose weights changed.

Covered elsewhere, not repeated here:
- a loss that becomes NaN stops the run naming the term, epoch and step, and keeps the last
  good checkpoint: tests/test_train.py::test_nan_stops_the_run_naming_term_and_step_and_keeps_checkpoint;
- ``kdlib.teachers.get`` retrains a teacher whose checkpoint no longer matches the hash in its
  record: tests/test_results.py::test_teacher_zoo_trains_once_then_loads_and_detects_a_changed_checkpoint.
"""
from __future__ import annotations

import errno
import os
import re

import pytest
import torch

from kdlib import data, experiments, teachers
from kdlib.io import CheckpointError, load_checkpoint, save_checkpoint
from kdlib.models import create_model
from kdlib.results import Store
from kdlib.train import RECIPES, Options, fit

from . import run_driver


@pytest.fixture(scope="module")
def tiny():
    return data.load("synthetic", num_classes=10, train_size=32, test_size=16, channels=1)


def net():
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10, in_channels=1)


def fit_epochs(dataset, epochs: int, **options) -> None:
    fit(net(), dataset, RECIPES["crd"].scaled(epochs, 16), options=Options(progress=False, **options))


def fill_the_disk(monkeypatch) -> None:
    """From now on, flushing a file to disk fails with ENOSPC (as a full disk does)."""
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", no_space)


def no_space_naming(path) -> str:
    return rf"No space left on device: '{re.escape(str(path))}'"


# ---- a full disk ---------------------------------------------------------------------------

def test_a_full_disk_while_checkpointing_stops_the_run_and_keeps_the_previous_checkpoint(tiny, tmp_path, monkeypatch):
    ckpt = tmp_path / "run.pt"
    fit_epochs(tiny, 1, checkpoint=ckpt)
    before = ckpt.read_bytes()
    fill_the_disk(monkeypatch)
    with pytest.raises(OSError, match=no_space_naming(ckpt)) as e:
        fit_epochs(tiny, 2, checkpoint=ckpt, resume=True)
    assert e.value.errno == errno.ENOSPC
    assert ckpt.read_bytes() == before and load_checkpoint(ckpt)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [ckpt]  # no temp file left behind


def test_a_full_disk_while_recording_keeps_the_previous_record(tmp_path, monkeypatch):
    store = Store(tmp_path)
    config = {"method": "kd", "seed": 0}
    summary = {"history": [], "last_acc": 50.0, "best_acc": 50.0}
    store.put(config, summary, "cpu")
    before = store.path(config).read_bytes()
    fill_the_disk(monkeypatch)
    with pytest.raises(OSError, match=no_space_naming(store.path(config))):
        store.put(config, {**summary, "last_acc": 60.0}, "cpu")
    assert store.path(config).read_bytes() == before
    assert list(tmp_path.iterdir()) == [store.path(config)]


# ---- damaged and foreign checkpoints -------------------------------------------------------

DAMAGE = {
    "truncated": lambda whole: whole[: len(whole) // 2],
    "empty": lambda whole: b"",
    "binary garbage": lambda whole: bytes(range(256)) * 8,
    "a Git LFS pointer": lambda whole: b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 1043\n",
    "a text note": lambda whole: b"how to get the weights: see README\n",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resuming_from_a_damaged_checkpoint_is_refused_naming_the_file(damage, tiny, tmp_path):
    ckpt = tmp_path / "run.pt"
    save_checkpoint(ckpt, {"epoch": 1, "model": net().state_dict()})
    ckpt.write_bytes(DAMAGE[damage](ckpt.read_bytes()))
    with pytest.raises(CheckpointError, match=rf"checkpoint '{re.escape(str(ckpt))}' is corrupt or truncated"):
        fit_epochs(tiny, 2, checkpoint=ckpt, resume=True)


class RunsCode:
    """Unpickling this creates the folder ``marker``: code that a malicious checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(fmt, tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "teacher.pth"
    payload = {"model": RunsCode(marker), "accuracy": 75.0}
    torch.save(payload, path, _use_new_zipfile_serialization=fmt == "zip")
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.is_dir()
    marker.rmdir()
    refused = rf"checkpoint '{re.escape(str(path))}' holds objects other than tensors.*refused without executing it"
    with pytest.raises(CheckpointError, match=refused):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=refused):
        teachers.from_checkpoint("resnet8", path, num_classes=10, in_channels=1)
    assert not marker.exists()


# ---- a teacher whose weights changed -------------------------------------------------------

def test_student_records_are_keyed_by_the_teacher_checkpoint_hash(tmp_path):
    """The same teacher file with other weights (retrained, replaced) never loads the old records."""
    path, results_dir = tmp_path / "teacher.pt", tmp_path / "results"

    def distil() -> dict:
        teacher = teachers.from_checkpoint("resnet8", path, num_classes=10, in_channels=1)
        [record] = experiments.run(run_driver.PROFILE, teacher, "resnet8", ["kd"], results_dir=results_dir,
                                   seeds=[0], progress=False)
        return record

    run_driver.make_teacher(path)
    first = distil()
    torch.manual_seed(1)
    save_checkpoint(path, {"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict()})
    second = distil()
    assert second["key"] != first["key"] and len(Store(results_dir).records()) == 2  # trained, not loaded
    assert second["config"]["teacher"]["sha256"] != first["config"]["teacher"]["sha256"]
    assert {**second["config"], "teacher": None} == {**first["config"], "teacher": None}
