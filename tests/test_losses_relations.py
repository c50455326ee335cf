"""Relational losses (SP, CC, RKD, PKT, ITRD) against the reference fixtures, plus invariants."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_close, load_loss_case, loss_cases
from kdlib import losses


def _features(a):
    return torch.tensor(a["input/feat_s"], requires_grad=True), torch.from_numpy(a["input/feat_t"])


_PLAIN = {"sp": (losses.sp, "output/loss_0"), "rkd": (losses.rkd, "output/loss"),
          "pkt": (losses.pkt, "output/loss")}


@pytest.mark.parametrize("family, case", [(f, c) for f in _PLAIN for c in loss_cases(f)])
def test_matches_reference(family, case):
    fn, out = _PLAIN[family]
    ent, a, tol = load_loss_case(family, case)
    hp = {k: ent["hparams"][k] for k in ("w_d", "w_a") if k in ent["hparams"]}
    f_s, f_t = _features(a)
    loss = fn(f_s, f_t, **hp)
    loss.backward()
    assert loss.dim() == 0
    assert_close(loss, a, tol, out)
    assert_close(f_s.grad, a, tol, "grad/feat_s")


@pytest.mark.parametrize("case", loss_cases("cc"))
def test_cc_matches_reference(case):
    ent, a, tol = load_loss_case("cc", case)
    f_s, f_t = _features(a)
    if not ent["hparams"]["embed"]:
        loss = losses.cc(f_s, f_t)
        loss.backward()
    else:  # both embeddings are trainable Linear layers, the teacher's included
        embed = {}
        for side in ("s", "t"):
            w = torch.from_numpy(a[f"param/embed_{side}.linear.weight"])
            embed[side] = nn.Linear(w.shape[1], w.shape[0])
            b = torch.from_numpy(a[f"param/embed_{side}.linear.bias"])
            embed[side].load_state_dict({"weight": w, "bias": b})
        loss = losses.cc(embed["s"](f_s), embed["t"](f_t))
        loss.backward()
        for side in ("s", "t"):
            for p in ("weight", "bias"):
                grad = getattr(embed[side], p).grad
                assert_close(grad, a, tol, f"grad_param/embed_{side}.linear.{p}")
    assert_close(loss, a, tol, "output/loss")
    assert_close(f_s.grad, a, tol, "grad/feat_s")


# ---- invariants ----------------------------------------------------------------------------

def test_zero_for_identical_inputs():
    f = torch.randn(8, 32)
    for fn in (losses.sp, losses.cc, losses.rkd, losses.pkt):
        assert abs(fn(f, f).item()) < 1e-6, fn.__name__


def test_relations_ignore_feature_width_and_scale():
    """SP, RKD and PKT compare batch relations: a rotated, rescaled, wider copy of the teacher
    features has the same relations (rotation-invariant Gram/angles/cosines)."""
    f_t = torch.randn(8, 16)
    q, _ = torch.linalg.qr(torch.randn(32, 32))
    f_s = 3.0 * torch.cat([f_t, torch.zeros(8, 16)], 1) @ q
    for fn in (losses.rkd, losses.pkt):
        assert abs(fn(f_s, f_t).item()) < 1e-5, fn.__name__
    assert abs(losses.sp(f_s, f_t).item()) < 1e-6


def test_sp_flattens_maps_of_any_shape():
    f_s, f_t = torch.randn(8, 4, 4, 4), torch.randn(8, 32, 2, 2)
    torch.testing.assert_close(losses.sp(f_s, f_t), losses.sp(f_s.flatten(1), f_t.flatten(1)))


def test_rkd_weights_combine_distance_and_angle_terms():
    f_s, f_t = torch.randn(8, 16), torch.randn(8, 24)
    d, a = losses.rkd(f_s, f_t, w_d=1.0, w_a=0.0), losses.rkd(f_s, f_t, w_d=0.0, w_a=1.0)
    torch.testing.assert_close(losses.rkd(f_s, f_t), 25 * d + 50 * a)


# ---- float32 under autocast, and which inputs get gradients ---------------------------------

RELATIONS = {"sp": losses.sp, "cc": losses.cc, "rkd": losses.rkd, "pkt": losses.pkt}


@pytest.mark.parametrize("name", RELATIONS)
def test_float32_under_autocast(name):
    fn = RELATIONS[name]
    f_s, f_t = torch.randn(8, 32).bfloat16(), torch.randn(8, 32).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(f_s, f_t)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, fn(f_s.float(), f_t.float()))


@pytest.mark.parametrize("name", ["sp", "rkd", "pkt"])
def test_no_gradient_reaches_the_teacher(name):
    f_s, f_t = torch.randn(8, 32, requires_grad=True), torch.randn(8, 48, requires_grad=True)
    RELATIONS[name](f_s, f_t).backward()
    assert f_t.grad is None and f_s.grad.abs().sum() > 0


def test_cc_trains_the_teacher_embedding_too():
    """The exception: CC's teacher input is a trainable embedding (RepDistiller trains it)."""
    e_s, e_t = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    losses.cc(e_s, e_t).backward()
    assert e_t.grad is not None and e_t.grad.abs().sum() > 0


# ---- ITRD (chapter 5): the TTM repository's ITLoss, on its fixtures ---------------------------

ITRD = Path(__file__).parent / "fixtures" / "reference" / "itrd"
ITRD_CASES = json.loads((ITRD / "itrd.json").read_text())["cases"]


@pytest.mark.parametrize("case", sorted(ITRD_CASES))
@pytest.mark.parametrize("term", ["corr", "mutual"])
def test_itrd_matches_the_original_code(case, term):
    spec = ITRD_CASES[case]
    with np.load(ITRD / "itrd.npz") as z:
        z_s = torch.tensor(z[f"{case}/z_s"], requires_grad=True)
        f_t = torch.tensor(z[f"{case}/f_t"])
        loss_ref, grad_ref = z[f"{case}/loss_{term}"], z[f"{case}/grad_{term}"]
    loss = losses.itrd_correlation(z_s, f_t, spec["alpha"]) if term == "corr" else losses.itrd_mutual(z_s, f_t)
    loss.backward()
    np.testing.assert_allclose(loss.detach().numpy(), loss_ref, **spec["tol"][f"loss_{term}"])
    np.testing.assert_allclose(z_s.grad.numpy(), grad_ref, **spec["tol"][f"grad_{term}"])


def test_itrd_invariants():
    """A student equal to the teacher: each correlation is (B − 1)/B (the unbiased std over a
    biased mean), so the loss is log2(D · B^(−2α)) in closed form; the teacher gets no gradient."""
    torch.manual_seed(0)
    f = torch.randn(16, 8)
    assert float(losses.itrd_correlation(f, f, 1.5)) == pytest.approx(math.log2(8 * 16 ** -3.0))
    t = torch.randn(16, 8, requires_grad=True)
    s = torch.randn(16, 8, requires_grad=True)
    (losses.itrd_correlation(s, t) + losses.itrd_mutual(s, t)).backward()
    assert t.grad is None and s.grad is not None


def test_itrd_correlation_a_constant_teacher_dimension_counts_as_uncorrelated():
    """A teacher unit that is zero for the whole batch (a dead ReLU in pooled VGG features): its
    dimension contributes |0 − 1|^(2α) = 1 and no gradient, the others their usual terms
    (the original code returns NaN here)."""
    torch.manual_seed(0)
    f = torch.randn(16, 8)
    t = torch.cat([f, torch.zeros(16, 1)], 1)
    s = torch.cat([f, torch.randn(16, 1)], 1).requires_grad_()
    loss = losses.itrd_correlation(s, t, 1.5)
    assert float(loss.detach()) == pytest.approx(math.log2(8 * 16 ** -3.0 + 1))
    loss.backward()
    assert torch.isfinite(s.grad).all() and float(s.grad[:, -1].abs().max()) == 0.0
