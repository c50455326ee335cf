"""Logit losses (KD, DKD, NKD, GKD, TTM, WTTM, DIST): reference fixtures and invariants."""
import pytest
import torch
import torch.nn.functional as F

from kdlib import losses
from conftest import assert_close, load_loss_case, loss_cases


def _inputs(arrays, *names):
    """Fixture inputs as tensors; floating student inputs (``logits_s``) require grad."""
    out = []
    for name in names:
        x = torch.from_numpy(arrays[f"input/{name}"])
        out.append(x.requires_grad_() if name.endswith("_s") else x)
    return out


def _check(fn, arrays, tol, out_name, grad_name, *names, **hparams):
    """Run ``fn`` on fresh inputs, compare the loss and the gradient w.r.t. ``logits_s``."""
    zs, *rest = _inputs(arrays, *names)
    loss = fn(zs, *rest, **hparams)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert_close(loss, arrays, tol, out_name)
    assert_close(zs.grad, arrays, tol, grad_name)


@pytest.mark.parametrize("case", loss_cases("kd"))
def test_kd_matches_reference(case):
    ent, a, tol = load_loss_case("kd", case)
    T = ent["hparams"]["T"]
    _check(losses.kd, a, tol, "output/loss", "grad/logits_s", "logits_s", "logits_t", T=T)
    # mdistiller's kd_loss is the same quantity (sum over classes, mean over batch)
    _check(losses.kd, a, tol, "output/loss_mdistiller_kd_loss",
           "grad/logits_s_mdistiller_kd_loss", "logits_s", "logits_t", T=T)


@pytest.mark.parametrize("case", loss_cases("dkd"))
def test_dkd_matches_reference(case):
    ent, a, tol = load_loss_case("dkd", case)
    hp = {k: ent["hparams"][k] for k in ("alpha", "beta", "T")}
    _check(losses.dkd, a, tol, "output/loss", "grad/logits_s",
           "logits_s", "logits_t", "target", **hp)


@pytest.mark.parametrize("case", loss_cases("nkd"))
@pytest.mark.parametrize("variant, drop_target", [
    ("as_coded", False), ("as_coded_sdd_origin", False), ("corrected", True)])
def test_nkd_matches_reference(case, variant, drop_target):
    ent, a, tol = load_loss_case("nkd", case)
    hp = {k: ent["hparams"][k] for k in ("gamma", "T")}
    _check(losses.nkd, a, tol, f"output/loss_{variant}", f"grad/logits_s_{variant}",
           "logits_s", "logits_t", "target", drop_target=drop_target, **hp)


@pytest.mark.parametrize("case", loss_cases("gkd"))
def test_gkd_matches_reference(case):
    ent, a, tol = load_loss_case("gkd", case)
    zs, zt, y = _inputs(a, "logits_s", "logits_t", "target")
    assert int((zt.argmax(1) == y).sum()) == ent["facts"]["teacher_correct"]
    _check(losses.gkd, a, tol, "output/loss", "grad/logits_s", "logits_s", "logits_t", "target",
           T=ent["hparams"]["T"])
    if "output/plain_kd_same_inputs" in a:
        assert_close(losses.kd(zs, zt, T=1.0), a, tol, "output/plain_kd_same_inputs")


@pytest.mark.parametrize("case", loss_cases("ttm"))
def test_ttm_wttm_match_reference(case):
    ent, a, tol = load_loss_case("ttm", case)
    gamma = ent["hparams"]["gamma"]
    for name, fn in (("ttm", losses.ttm), ("wttm", losses.wttm)):
        _check(fn, a, tol, f"output/loss_{name}", f"grad/logits_s_{name}",
               "logits_s", "logits_t", gamma=gamma)


@pytest.mark.parametrize("case", loss_cases("dist"))
def test_dist_matches_reference(case):
    ent, a, tol = load_loss_case("dist", case)
    hp = {k: ent["hparams"][k] for k in ("beta", "gamma", "tau")}
    _check(losses.dist, a, tol, "output/loss", "grad/logits_s", "logits_s", "logits_t", **hp)


# ---- invariants (closed forms each chapter derives) -------------------------------------------------

def _logits(B=8, K=10, scale=3.0):
    return scale * torch.randn(B, K), scale * torch.randn(B, K)


def test_kd_reductions_agree():
    zs, zt = _logits()
    T = 4.0
    log_q, p = F.log_softmax(zs / T, 1), F.softmax(zt / T, 1)
    repdistiller = F.kl_div(log_q, p, reduction="sum") * T**2 / len(zs)
    mdistiller = (F.kl_div(log_q, p, reduction="none").sum(1) * T**2).mean()
    batchmean = F.kl_div(log_q, p, reduction="batchmean") * T**2
    for other in (repdistiller, mdistiller, batchmean, losses.kd_per_sample(zs, zt, T).mean()):
        torch.testing.assert_close(losses.kd(zs, zt, T), other)


def test_dkd_terms_split_target_and_non_target_knowledge():
    """TCKD alone is a KL of two-class distributions; NCKD alone ignores the target logit."""
    zs, zt = _logits()
    y = torch.randint(0, 10, (8,))

    def binary(z):
        p_y = F.softmax(z / 4, 1).gather(1, y[:, None])
        return torch.cat([p_y, 1 - p_y], 1)

    b_s, b_t = binary(zs), binary(zt)
    tckd = 16 * (b_t * (b_t.log() - b_s.log())).sum(1).mean()
    torch.testing.assert_close(losses.dkd(zs, zt, y, alpha=1.0, beta=0.0), tckd)
    shifted = zs.clone()
    shifted[torch.arange(8), y] += 5.0
    nckd = losses.dkd(zs, zt, y, alpha=0.0, beta=1.0)
    torch.testing.assert_close(losses.dkd(shifted, zt, y, alpha=0.0, beta=1.0), nckd)


def test_nkd_variants_differ_only_by_the_target_class():
    zs, zt = _logits()
    y = torch.randint(0, 10, (8,))
    kept, dropped = (losses.nkd(zs, zt, y, drop_target=d) for d in (False, True))
    assert not torch.isclose(kept, dropped)
    # with a teacher and student that give the target class no mass, both agree
    zs[torch.arange(8), y] = zt[torch.arange(8), y] = -1e4
    torch.testing.assert_close(losses.nkd(zs, zt, y, drop_target=False),
                               losses.nkd(zs, zt, y, drop_target=True))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_ttm_is_kl_to_teacher_at_temperature_1_over_gamma(T):
    zs, zt = _logits(K=100)
    p = F.softmax(zt / T, 1)
    expected = (p * (p.log() - F.log_softmax(zs, 1))).sum(1).mean()
    torch.testing.assert_close(losses.ttm(zs, zt, gamma=1 / T), expected)


def test_wttm_with_one_hot_like_teacher_equals_ttm():
    zs, _ = _logits()
    zt = torch.full((8, 10), -100.0)  # U = 1 + 9·exp(-200γ) = 1 in float32
    zt[torch.arange(8), torch.randint(0, 10, (8,))] = 100.0
    for gamma in (0.2, 0.5, 1.0):
        torch.testing.assert_close(losses.wttm(zs, zt, gamma), losses.ttm(zs, zt, gamma))


def test_gkd_all_right_is_kd_and_none_right_is_zero():
    zs, zt = _logits()
    zs.requires_grad_()
    right, wrong = zt.argmax(1), (zt.argmax(1) + 1) % 10
    torch.testing.assert_close(losses.gkd(zs, zt, right), losses.kd(zs, zt, T=1.0))
    loss = losses.gkd(zs, zt, wrong)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(zs.grad).all() and (zs.grad == 0).all()


def test_gkd_averages_over_the_right_rows_only():
    zs, zt = _logits()
    y = zt.argmax(1)
    y[:3] = (y[:3] + 1) % 10
    torch.testing.assert_close(losses.gkd(zs, zt, y, T=2.0), losses.kd(zs[3:], zt[3:], T=2.0))


def test_dist_is_zero_for_identical_logits():
    zs, _ = _logits()
    assert abs(losses.dist(zs, zs).item()) < 16 * 1e-6  # τ² times float32 rounding


# ---- float32 under autocast, and no gradient to the teacher ---------------------------------

_y = torch.arange(8) % 10
LOGIT_LOSSES = {
    "kd": lambda s, t: losses.kd(s, t),
    "dkd": lambda s, t: losses.dkd(s, t, _y),
    "nkd": lambda s, t: losses.nkd(s, t, _y, T=4.0, gamma=8.0, drop_target=False),
    "gkd": lambda s, t: losses.gkd(s, t, t.argmax(1)),
    "ttm": lambda s, t: losses.ttm(s, t, 0.2),
    "wttm": lambda s, t: losses.wttm(s, t, 0.2),
    "dist": lambda s, t: losses.dist(s, t),
}


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_float32_under_autocast(name):
    fn = LOGIT_LOSSES[name]
    zs, zt = (z.bfloat16() for z in _logits())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fn(zs, zt)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, fn(zs.float(), zt.float()))


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_no_gradient_reaches_the_teacher(name):
    zs, zt = (z.requires_grad_() for z in _logits())
    LOGIT_LOSSES[name](zs, zt).backward()
    assert zt.grad is None and zs.grad.abs().sum() > 0
