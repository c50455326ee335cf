"""The trainer: it learns, distill_many equals separate runs, resume equals no interruption, DDP."""
from __future__ import annotations

import math

import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from kdlib import data, methods
from kdlib.io import CheckpointError
from kdlib.models import FeatureAdapter, create_model
from kdlib.train import (RECIPES, NonFiniteLossError, Options, Recipe, Student, distill, distill_many, fit,
                         resolve_device)

FAST = Options(progress=False)


@pytest.fixture(scope="module")
def synthetic():
    return data.load("synthetic", num_classes=10, train_size=96, test_size=48, channels=1)


def tiny_recipe(epochs=1, batch_size=16) -> Recipe:
    return RECIPES["crd"].scaled(epochs, batch_size)


def small_net(seed: int) -> nn.Module:
    """A BatchNorm-free CNN (so DDP's per-rank batches give exactly the global-batch gradient)."""
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("stem", nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()))
    net.add_module("stage1", nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()))
    net.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    net.add_module("fc", nn.Linear(16, 10))
    return FeatureAdapter(net, stem="stem", stages=["stage1"], classifier="fc")


def weights(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict, **tol):
    assert a.keys() == b.keys()
    for k in a:
        if tol:
            torch.testing.assert_close(a[k], b[k], **tol, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


# ---- recipes --------------------------------------------------------------------------------

def test_crd_recipe_schedule_and_scaling():
    r = RECIPES["crd"]
    assert [r.lr_factor(e) for e in (1, 150, 151, 180, 181, 210, 211, 240)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    lr = {arch: r.lr_for(create_model(arch, 10, 1)) for arch in ("MobileNetV2", "ShuffleV1", "ShuffleV2", "resnet20")}
    assert lr == {"MobileNetV2": 0.01, "ShuffleV1": 0.01, "ShuffleV2": 0.01, "resnet20": 0.05}
    assert r.lr_for(torch.nn.Linear(2, 2)) == 0.05   # a network from elsewhere: the base rate
    assert r.scaled(24).milestones == (15, 18, 21) and r.scaled(24, batch_size=128).batch_size == 128
    assert RECIPES["cd"].lr_factor(61) == pytest.approx(0.2)


def test_low_lr_does_not_depend_on_an_argument(synthetic):
    """distill() without any architecture argument trains MobileNetV2 at 0.01, as the recipe says."""
    torch.manual_seed(0)
    teacher, student = create_model("resnet8", 10, 1), create_model("MobileNetV2", 10, 1)
    s = distill(student, teacher, methods.create("kd"), synthetic, tiny_recipe(1), options=FAST)
    assert s["history"][0]["lr"] == pytest.approx(0.01)


def test_cuda_asked_where_there_is_none():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unsupported device"):
        resolve_device("tpu")


# ---- it learns --------------------------------------------------------------------------

@pytest.mark.skipif(not (data.FASHION_DEBIAN / "train-images-idx3-ubyte.gz").is_file(), reason="no Fashion-MNIST")
def test_one_short_epoch_on_fashion_mnist_learns():
    ds = data.load("fashion_mnist").subset(train=2000, test=1000)
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_channels=1)
    s = fit(model, ds, tiny_recipe(1, 64), options=FAST)
    assert s["last_acc"] > 35.0  # chance is 10%
    h = s["history"][0]
    assert h["epoch"] == 1 and h["terms"]["ce"] > 0 and h["images_per_s"] > 0
    assert s["best_acc"] >= s["last_acc"] and s["best_epoch"] == 1


# ---- distill_many equals separate runs ------------------------------------------------------

def test_distill_many_equals_training_each_student_alone(synthetic):
    """Also for a method with its own randomness (CRD samples negatives, initialises embeddings)."""
    teacher = small_net(0)
    recipe = tiny_recipe(2)
    specs = {"kd": ({}, 1), "crd": ({"nce_k": 32}, 2), "vanilla": ({}, 3)}

    def student(name):
        hparams, seed = specs[name]
        return Student(name, small_net(seed), methods.create(name, **hparams))

    together = [student(name) for name in specs]
    distill_many(together, teacher, synthetic, recipe, seed=3, options=FAST)
    for s in together:
        alone = student(s.name)
        distill_many([alone], teacher if s.method.needs_teacher else None, synthetic, recipe, seed=3, options=FAST)
        assert_same_weights(weights(alone.model), weights(s.model))
        assert_same_weights(alone.method.state_dict(), s.method.state_dict())
        assert alone.history[-1]["test_acc"] == s.history[-1]["test_acc"]


def test_teacher_gets_no_gradient_and_stays_in_eval(synthetic):
    teacher = create_model("resnet8", 10, 1)
    before = weights(teacher)
    distill(create_model("resnet8", 10, 1), teacher, methods.create("kd"), synthetic, tiny_recipe(), options=FAST)
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert_same_weights(before, weights(teacher))  # eval mode: BN running stats untouched too


# ---- resume -------------------------------------------------------------------------------

class Interrupt(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted_run(synthetic, tmp_path):
    teacher = small_net(0)
    recipe = tiny_recipe(3)

    def run(**opts):
        torch.manual_seed(7)
        m = create_model("resnet8", 10, 1)
        distill(m, teacher, methods.create("kd"), synthetic, recipe, seed=1, options=Options(progress=False, **opts))
        return weights(m)

    reference = run()

    def stop_after_epoch_2(epoch, metrics):
        if epoch == 2:
            raise Interrupt

    ckpt = tmp_path / "run.pt"
    with pytest.raises(Interrupt):
        run(checkpoint=ckpt, resume=True, callbacks=[stop_after_epoch_2])
    assert ckpt.is_file()
    assert_same_weights(reference, run(checkpoint=ckpt, resume=True))


def test_checkpoint_of_another_group_is_refused(synthetic, tmp_path):
    ckpt = tmp_path / "run.pt"
    fit(small_net(1), synthetic, tiny_recipe(1), options=Options(progress=False, checkpoint=ckpt))
    with pytest.raises(CheckpointError, match="does not belong to this run or is malformed .*has no student 'student'"):
        distill(small_net(1), small_net(0), methods.create("kd"), synthetic, tiny_recipe(2),
                options=Options(progress=False, checkpoint=ckpt, resume=True))


# ---- non-finite losses ---------------------------------------------------------------------

class Explodes(methods.Method):
    """Adds a term that turns NaN at the third step of the second epoch."""

    def forward(self, batch, fs, ft, step):
        terms = super().forward(batch, fs, ft, step)
        bad = step == 6 + 3  # 96 images in batches of 16: 6 steps per epoch
        terms["boom"] = fs.logits.sum() * (float("nan") if bad else 0.0)
        return terms


def test_nan_stops_the_run_naming_term_and_step_and_keeps_checkpoint(synthetic, tmp_path):
    ckpt = tmp_path / "run.pt"
    with pytest.raises(NonFiniteLossError, match=r"'boom'.*epoch 2, step 2"):
        distill_many([Student("s", small_net(1), Explodes())], None, synthetic, tiny_recipe(3), seed=0,
                     options=Options(progress=False, checkpoint=ckpt))
    from kdlib.io import load_checkpoint
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["students"]["s"]["model"].values() if v.is_floating_point())


# ---- DDP: two processes (gloo) equal one process with the global batch --------------------

def _ddp_worker(rank, world, store, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        ds = data.load("synthetic", num_classes=10, train_size=96, test_size=48, channels=1)
        model = small_net(1)
        distill(model, small_net(0), methods.create("kd"), ds, tiny_recipe(2, batch_size=8), seed=4, options=FAST)
        if rank == 0:
            torch.save(weights(model), out)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process_with_the_global_batch(synthetic, tmp_path):
    out = tmp_path / "ddp.pt"
    mp.start_processes(_ddp_worker, args=(2, tmp_path / "store", out), nprocs=2, start_method="spawn")
    single = small_net(1)
    distill(single, small_net(0), methods.create("kd"), synthetic, tiny_recipe(2, batch_size=16), seed=4, options=FAST)
    assert_same_weights(weights(single), torch.load(out, weights_only=True), rtol=1e-4, atol=1e-5)


def test_records_carry_the_last_epochs_predictions(synthetic):
    """Every summary holds the predicted class of every test image at the last epoch; the
    accuracy recomputed from them is the recorded last accuracy."""
    from kdlib.io import decode_ints
    torch.manual_seed(0)
    s = fit(create_model("resnet8", 10, 1), synthetic, tiny_recipe(2), options=FAST)
    preds = decode_ints(s["predictions"])
    assert preds.shape == (len(synthetic.test),) and preds.dtype.kind == "i" and s["num_classes"] == 10
    assert 100.0 * (preds == synthetic.test.labels.numpy()).mean() == pytest.approx(s["last_acc"])


def test_nan_weights_stop_the_run_before_they_are_recorded(synthetic):
    """A last step that leaves NaN weights behind a finite loss never reaches a summary."""
    net = small_net(0)

    class PoisonsWeights(methods.Method, register=False):
        def forward(self, batch, fs, ft, step):
            terms = super().forward(batch, fs, ft, step)  # finite: computed before the poison
            if step == 6:  # the last of 96 images in batches of 16
                with torch.no_grad():
                    net.model.fc.bias.fill_(float("nan"))
            return terms

    with pytest.raises(NonFiniteLossError, match="weights became NaN/Inf in epoch 1"):
        distill_many([Student("s", net, PoisonsWeights())], None, synthetic, tiny_recipe(1), options=FAST)


def test_sskd_records_its_teacher_heads_self_supervised_accuracy(synthetic):
    """SSKD's summary carries the frozen teacher head's accuracy on the last epoch's rotated
    rows (``method_report``), measured on that epoch's steps only; other methods report nothing."""
    torch.manual_seed(0)
    teacher = create_model("resnet8", 10, 1).eval()
    students = [Student(m, create_model("resnet8", 10, 1), methods.create(m)) for m in ("sskd", "kd")]
    out = distill_many(students, teacher, synthetic, tiny_recipe(3, batch_size=32), seed=0, options=FAST)
    acc = out["sskd"]["method_report"]["teacher_ss_acc"]
    assert 0.0 <= acc <= 100.0 and "method_report" not in out["kd"]
    assert len(students[0].method._head_acc) == math.ceil(len(synthetic.train) / 32)  # one epoch of steps
