"""Bad input gets a clear error (ValueError, FileNotFoundError or CheckpointError) that names
what was wrong and the valid choices, before any training, never an exception from inside torch.

Covered elsewhere, not repeated here: an unknown model (tests/test_models.py), method and
hyperparameter of a method or a combination (tests/test_methods.py), dataset and missing or
checksum-failing dataset files (tests/test_data.py), profile and profile overrides
(tests/test_results.py), device (``resolve_device``, tests/test_train.py), FSP on a pair
whose channels differ (tests/test_methods.py), a class-count mismatch in a checkpoint dict
(tests/test_models.py), a wrong notebook parameter under papermill (tests/test_book.py).
"""
from __future__ import annotations

import gzip
import re
import subprocess
import sys

import pytest
import torch

from kdlib import data, experiments, profiles, results, teachers
from kdlib.__main__ import main
from kdlib.chapter import Chapter
from kdlib.io import CheckpointError, save_checkpoint
from kdlib.models import create_model

from . import run_driver

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


# ---- notebook parameters (what papermill injects) ------------------------------------------

@pytest.mark.parametrize("params, message", [
    (dict(seeds="zero"), "parameter seeds='zero' is invalid: expected a list of ints such as [0, 1, 2]"),
    (dict(seeds="[0, 'a']"), "seeds must be a non-empty list of ints, got [0, 'a']"),
    (dict(seeds=True), "seeds must be a non-empty list of ints, got True"),
    (dict(epochs=-1), "epochs must be a positive int, got -1"),
    (dict(epochs=True), "epochs must be a positive int, got True"),
    (dict(profile=3), "parameter profile=3 is invalid: expected one of smoke, quick, cpu, gpu, paper"),
    (dict(force="yes"), "parameter force='yes' is invalid: expected True or False"),
    (dict(device="tpu"), "unsupported device 'tpu'; valid: 'cpu', 'cuda', 'cuda:<index>'"),
    pytest.param(dict(device="cuda"), "device 'cuda' asked for, but CUDA is not available on this machine; use 'cpu'",
                 marks=no_cuda),
])
def test_a_wrong_chapter_parameter_is_named_with_what_is_expected(params, message, tmp_path):
    with pytest.raises(ValueError) as e:
        Chapter("00_foundations", **{"profile": "smoke", "results_dir": tmp_path, **params})
    assert str(e.value) == message


# ---- methods and pairs, through a chapter's runs --------------------------------------------

@pytest.fixture(scope="module")
def resnet20_teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "resnet20.pt"
    save_checkpoint(path, {"model": create_model("resnet20", num_classes=10, in_channels=1).state_dict()})
    return teachers.from_checkpoint("resnet20", path, num_classes=10, in_channels=1)


@pytest.mark.parametrize("student, spec, message", [
    ("resnet8", {"method": "crd+kd", "kd__temperature": 2.0},
     r"method 'crd\+kd' has no hyperparameter 'kd__temperature'; valid: ce_weight, crd__crd_weight, .*kd__T"),
    ("MobileNetV2", {"method": "fsp"},
     r"method 'fsp' cannot distil teacher resnet20 into student MobileNetV2: FSP needs equal channel counts"),
])
def test_a_run_that_cannot_be_built_is_refused_before_training(student, spec, message, resnet20_teacher, tmp_path):
    with pytest.raises(ValueError, match=message):
        experiments.run(run_driver.PROFILE, resnet20_teacher, student, {"bad": spec}, results_dir=tmp_path / "results",
                        progress=False)
    assert not list(tmp_path.rglob("*.*"))  # no record, no checkpoint


def test_a_teacher_checkpoint_for_another_number_of_classes_is_named(tmp_path):
    path = tmp_path / "resnet8_cifar100.pth"
    save_checkpoint(path, {"model": create_model("resnet8", num_classes=100).state_dict()})
    with pytest.raises(ValueError, match="checkpoint classifier has 100 classes but the model has 10; "
                                         "create the model with num_classes=100"):
        teachers.from_checkpoint("resnet8", path, num_classes=10, in_channels=3)


# ---- dataset files -------------------------------------------------------------------------

IDX_IMAGES = b"\0\0\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (60000, 28, 28)) + bytes(1000)


@pytest.mark.parametrize("name, content", [
    pytest.param("train-images-idx3-ubyte.gz", gzip.compress(IDX_IMAGES)[:-20], id="gzip cut short"),
    pytest.param("train-images-idx3-ubyte.gz", b"<html><body>404 Not Found</body></html>", id="an error page"),
    pytest.param("train-images-idx3-ubyte", IDX_IMAGES, id="IDX cut short"),
])
def test_a_broken_fashion_mnist_file_is_named(name, content, tmp_path):
    (tmp_path / name).write_bytes(content)
    named = re.escape(str(tmp_path / name))
    with pytest.raises(ValueError, match=rf"{named} is corrupt or not .*; delete it and get the data again"):
        data.load("fashion_mnist", tmp_path, download=False)


# ---- the command line ------------------------------------------------------------------------

def test_the_cli_refuses_a_bad_method_with_exit_code_2_and_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kdlib", "distill", "--teacher", "resnet8", "--student", "resnet8",
                          "--method", "kdd", "--profile", "smoke", "--results-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: unknown method 'kdd'; valid methods: ") and out.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--student", "resnet9"], "unknown model 'resnet9'; valid models: "),
    (["--profile", "laptop"], "unknown profile 'laptop'; valid profiles: smoke, quick, cpu, gpu, paper"),
    (["--device", "tpu"], "unsupported device 'tpu'; valid: 'cpu', 'cuda', 'cuda:<index>'"),
    pytest.param(["--device", "cuda"], "device 'cuda' asked for, but CUDA is not available", marks=no_cuda),
    (["--method", "crd+kd", "--hparams", '{"kd__temperature": 2}'], "method 'crd+kd' has no hyperparameter"),
    (["--hparams", "{T: 2}"], "--hparams is not a JSON object"),
    (["--hparams", "[2]"], "--hparams is not a JSON object"),
])
def test_the_cli_names_a_bad_argument_in_one_line(args, message, tmp_path, capsys):
    argv = ["distill", "--teacher", "resnet8", "--student", "resnet8", "--method", "kd", "--profile", "smoke",
            "--quiet", "--results-dir", str(tmp_path / "results"), *args]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.*"))  # nothing trained or written


def test_the_cli_names_a_damaged_checkpoint_in_one_line(tmp_path, capsys):
    config = teachers.teacher_config("resnet8", profiles.get("smoke"))
    ckpt = tmp_path / "checkpoints" / f"teacher-{results.config_key(config)}.pt"  # an interrupted teacher run's
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"\0" * 100)
    with pytest.raises(SystemExit) as e:
        main(["train-teacher", "resnet8", "--profile", "smoke", "--quiet", "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == f"error: checkpoint {str(ckpt)!r} is corrupt or truncated (unreadable pickle data)\n"
    assert isinstance(e.value.__context__, CheckpointError)
