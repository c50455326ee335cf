"""Round two: what is read back is checked, bad hyperparameters are refused before training,
NaN never reaches a record, a failing chapter keeps the previous executed notebook, and the
small faults (duplicate seeds, file modes, bad results folders, malformed resume checkpoints,
zero epochs, the CLI's one-line errors) are answered clearly."""
from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch

from kdlib import book, data, experiments, methods, profiles, teachers
from kdlib.chapter import Chapter
from kdlib.io import CheckpointError, save_checkpoint
from kdlib.models import create_model
from kdlib.results import RecordError, Store, config_key, read_record
from kdlib.train import RECIPES, Options, Recipe, Student, distill_many, fit

from . import run_driver


@pytest.fixture(scope="module")
def tiny():
    return data.load("synthetic", num_classes=10, train_size=32, test_size=16, channels=1)


def summary(acc=70.0):
    return {"history": [{"epoch": 1, "test_acc": acc, "terms": {"ce": 0.5}}], "last_acc": acc, "best_acc": acc,
            "best_epoch": 1, "wall_time": 1.0, "images_per_s": 10.0, "num_classes": 10}


def stored(tmp_path, seed=0):
    store = Store(tmp_path)
    config = {"role": "student", "method": {"name": "kd"}, "seed": seed}
    rec = store.put(config, summary(), "cpu")
    return store, config, tmp_path / f"{rec['key']}.json"


# ---- records read back are checked ---------------------------------------------------------

@pytest.mark.parametrize("damage, message", [
    (lambda r: "{not json", "unreadable"),
    (lambda r: json.dumps([1, 2]), "not a record"),
    (lambda r: json.dumps({**r, "last_acc": float("nan"), "history": [{"test_acc": float("nan")}]}),
     "last_acc is nan"),
    (lambda r: json.dumps({**r, "last_acc": 1e9}), r"last_acc is 1000000000.0; expected a percentage in \[0, 100\]"),
    (lambda r: json.dumps({**r, "key": "0" * 16}), "is not its file name"),
    (lambda r: json.dumps({**r, "config": {**r["config"], "seed": 1}}), "does not hash to its key"),
    (lambda r: json.dumps({**r, "history": []}), "history is not a non-empty list"),
    (lambda r: json.dumps({**r, "best_acc": "70"}), "best_acc is '70'"),
])
def test_a_damaged_record_is_reported_with_its_file_name(tmp_path, damage, message):
    store, config, path = stored(tmp_path)
    path.write_text(damage(json.loads(path.read_text())))
    for read in (lambda: store.get(config), lambda: store.records()):
        with pytest.raises(RecordError, match=rf"record '{path}' is damaged: .*{message}"):
            read()


def test_a_seed_of_the_wrong_type_is_refused(tmp_path):
    store = Store(tmp_path)
    config = {"role": "student", "method": {"name": "kd"}, "seed": "0"}
    store.put(config, summary(), "cpu")
    with pytest.raises(RecordError, match="its seed '0' is not an int"):
        store.get(config)


def test_copies_and_other_json_files_are_not_records(tmp_path):
    store, config, path = stored(tmp_path)
    shutil.copy(path, tmp_path / f"{path.stem} (copy).json")
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    assert [r["key"] for r in store.records()] == [path.stem]


def test_records_are_written_with_the_umasks_mode(tmp_path):
    old = os.umask(0o022)
    try:
        _, _, path = stored(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("root, message", [("", "results_dir is empty"), ("FILE", "is a file; expected a folder")])
def test_bad_results_folders(tmp_path, root, message):
    if root == "FILE":
        root = tmp_path / "a-file"
        root.write_text("x")
    with pytest.raises(ValueError, match=message):
        Store(root)


# ---- hyperparameters are refused before any training ---------------------------------------

@pytest.mark.parametrize("name, hp, message", [
    ("kd", {"T": -1.0}, "T=-1.0 is out of range; expected a positive number"),
    ("kd", {"T": 0}, "T=0.0 is out of range; expected a positive number"),
    ("kd", {"T": float("nan")}, "T=nan is out of range; expected a finite number"),
    ("kd", {"T": "4"}, "T='4' has the wrong type; expected a number"),
    ("kd", {"kd_weight": -0.9}, "kd_weight=-0.9 is out of range; expected a number >= 0"),
    ("dkd", {"warmup_epochs": -20}, "warmup_epochs=-20 is out of range"),
    ("crd", {"nce_k": 0}, "nce_k=0 is out of range; expected an int >= 1"),
    ("crd+kd", {"crd__nce_k": -5}, "crd__nce_k=-5 is out of range"),
    ("sskd", {"ratio_ss": 1.5}, r"ratio_ss=1.5 is out of range; expected a number in \(0, 1\]"),
    ("sd-kd", {"scales": [0, 2]}, "scales=.* expected a non-empty list of positive ints"),
    ("fitnet", {"hint_layer": True}, "hint_layer=True has the wrong type; expected an int"),
])
def test_bad_hyperparameters_are_refused(name, hp, message):
    with pytest.raises(ValueError, match=message):
        methods.create(name, **hp)


def test_a_chapter_checks_its_runs_before_training_the_teacher(tmp_path):
    ch = Chapter("test", profile="smoke", results_dir=tmp_path)
    with pytest.raises(ValueError, match="T=-4.0 is out of range"):
        ch.run(("resnet20", "resnet8"), {"kd": {"method": "kd", "T": -4}})
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.pt"))  # no teacher was trained


def test_profile_overrides_are_checked():
    with pytest.raises(ValueError, match="seeds must be distinct"):
        profiles.get("smoke", seeds=[0, 0])
    with pytest.raises(ValueError, match=r"pairs name unknown models \['resnet9'\]"):
        profiles.get("smoke", pairs=[["resnet20", "resnet9"]])
    with pytest.raises(ValueError, match="train_size must be a positive int"):
        profiles.get("smoke", train_size=0)


# ---- NaN never reaches a record; a bad teacher is named ------------------------------------

def test_a_teacher_with_nan_weights_is_refused(tiny, tmp_path):
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10, 1)
    with torch.no_grad():
        teacher.classifier.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="the teacher's weights hold NaN/Inf"):
        distill_many([Student("s", create_model("resnet8", 10, 1), methods.create("kd"))], teacher, tiny,
                     RECIPES["crd"].scaled(1, 16), options=Options(progress=False))
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, {"model": teacher.state_dict()})
    with pytest.raises(CheckpointError, match=f"teacher checkpoint '{path}' holds NaN/Inf weights"):
        teachers.from_checkpoint("resnet8", path, num_classes=10, in_channels=1)


def test_zero_epochs_are_refused(tiny):
    with pytest.raises(ValueError, match="recipe.epochs must be an int >= 1, got 0"):
        fit(create_model("resnet8", 10, 1), tiny, Recipe(epochs=0, batch_size=16),
            options=Options(progress=False))


@pytest.mark.parametrize("state", [{"epoch": 1}, {"epoch": "one", "students": {}}, {"students": {"x": 1}, "epoch": 1}])
def test_a_malformed_resume_checkpoint_is_named(tiny, tmp_path, state):
    ckpt = tmp_path / "run.pt"
    save_checkpoint(ckpt, state)
    with pytest.raises(CheckpointError, match=f"resume checkpoint '{ckpt}' does not belong to this run or is malformed"):
        fit(create_model("resnet8", 10, 1), tiny, RECIPES["crd"].scaled(2, 16),
            options=Options(progress=False, checkpoint=ckpt, resume=True))


# ---- a finished group's training is never lost ----------------------------------------------

def test_a_kill_before_the_records_are_written_keeps_the_checkpoint(tmp_path, teacher_ckpt, monkeypatch):
    """The group's checkpoint is deleted only after its records exist: a run stopped between
    training and recording resumes from it instead of training again."""
    p = run_driver.PROFILE
    t = teachers.from_checkpoint("resnet8", teacher_ckpt, num_classes=10, in_channels=1)
    results = tmp_path / "results"

    def killed(self, config, summary, device):
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "put", killed)
    with pytest.raises(KeyboardInterrupt):
        experiments.run(p, t, "resnet8", ["kd"], results_dir=results, seeds=[0], progress=False)
    monkeypatch.undo()
    ckpts = list((tmp_path / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1
    epochs_run = []
    monkeypatch.setattr("kdlib.train._Run._epoch", lambda self, e: epochs_run.append(e))
    rec, = experiments.run(p, t, "resnet8", ["kd"], results_dir=results, seeds=[0], progress=False)
    assert epochs_run == [] and rec["config"]["method"]["name"] == "kd"   # resumed from the last epoch
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


# ---- a failing chapter keeps the published notebook ----------------------------------------

def test_a_failing_chapter_keeps_the_previous_executed_notebook(tmp_path, monkeypatch):
    import nbformat
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("profile = 'x'", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("raise RuntimeError('boom')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "book" / "bad.ipynb")
    executed = root / "executed"
    executed.mkdir()
    (executed / "bad.ipynb").write_text("the published version")
    monkeypatch.setattr(book, "ROOT", root)
    with pytest.raises(Exception, match="boom"):
        book.run_chapter("bad", "smoke", executed)
    assert (executed / "bad.ipynb").read_text() == "the published version"
    assert (root / "_build" / "smoke" / "failed" / "bad.ipynb").is_file()


# ---- the CLI's one-line errors ---------------------------------------------------------------

@pytest.mark.parametrize("error, code, text", [
    (KeyboardInterrupt(), 130, "interrupted: finished runs are recorded"),
    (OSError(28, "No space left on device", "results/x.json"), 2, "error: OSError: [Errno 28] No space left"),
    (KeyError("teacher"), 2, "error: KeyError: 'teacher'"),
])
def test_cli_errors_are_one_line(monkeypatch, capsys, error, code, text):
    from kdlib import __main__ as cli

    def fails(args):
        raise error

    monkeypatch.setattr(cli, "cmd_train_teacher", fails)
    with pytest.raises(SystemExit) as e:
        cli.main(["train-teacher", "resnet8", "--profile", "smoke"])
    assert e.value.code == code and text in capsys.readouterr().err


def test_cli_reports_a_nan_stop_in_one_line(monkeypatch, capsys):
    from kdlib import __main__ as cli
    from kdlib.train import NonFiniteLossError

    def fails(args):
        raise NonFiniteLossError("student 'kd': loss term 'kd' became NaN/Inf at epoch 2, step 3")

    monkeypatch.setattr(cli, "cmd_distill", fails)
    with pytest.raises(SystemExit) as e:
        cli.main(["distill", "--teacher", "resnet8", "--student", "resnet8", "--method", "kd", "--profile", "smoke"])
    assert e.value.code == 2 and "became NaN/Inf at epoch 2" in capsys.readouterr().err


def test_read_record_accepts_what_the_store_writes(tmp_path):
    _, config, path = stored(tmp_path)
    assert read_record(path)["key"] == config_key(config)
