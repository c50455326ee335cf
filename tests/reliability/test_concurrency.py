"""Several processes training into one ``results/`` folder at once.

Concurrent writers of distinct records are also covered by
tests/test_results.py::test_concurrent_writers_never_leave_a_torn_record (``Store.put`` alone);
here whole runs race, some of them on the same configs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from kdlib import data, train
from kdlib.models import create_model
from kdlib.train import RECIPES, Options, fit

from . import run_driver


def test_concurrent_runs_give_complete_records_equal_to_a_sequential_run(teacher_ckpt, reference, tmp_path):
    jobs = [([0], ["vanilla", "kd"]),
            ([0], ["vanilla", "kd"]),    # the same runs: the same records and the same checkpoint file
            ([0], ["kd"]),               # one of them, trained without the other
            ([1], ["kd", "vanilla"])]    # other seeds, the students in another order
    procs = [run_driver.start(tmp_path, teacher_ckpt, seeds, labels) for seeds, labels in jobs]
    for p in procs:
        run_driver.finish(p)
    # every record parses, none is lost, each equals the sequential run's
    assert run_driver.records(tmp_path) == run_driver.records(reference)
    assert [p.name for p in (tmp_path / "results").iterdir() if p.suffix != ".json"] == []


def test_a_checkpoint_removed_by_a_finished_run_of_the_same_config_means_starting_afresh(tmp_path, monkeypatch):
    """Runs of one config share its checkpoint, and the first to finish removes it. If that happens
    between another run's check for the file and its read, that run starts from scratch."""
    ds = data.load("synthetic", num_classes=10, train_size=32, test_size=16, channels=1)
    recipe = RECIPES["crd"].scaled(1, 16)
    ckpt = tmp_path / "run.pt"

    def trained(**options) -> dict:
        torch.manual_seed(0)
        model = create_model("resnet8", num_classes=10, in_channels=1)
        fit(model, ds, recipe, options=Options(progress=False, **options))
        return model.state_dict()

    fresh = trained()
    trained(checkpoint=ckpt)
    load_checkpoint = train.load_checkpoint

    def removed_just_before_reading(path, **kwargs):
        Path(path).unlink()
        return load_checkpoint(path, **kwargs)

    monkeypatch.setattr(train, "load_checkpoint", removed_just_before_reading)
    resumed = trained(checkpoint=ckpt, resume=True)
    assert all(torch.equal(v, fresh[k]) for k, v in resumed.items())
