"""CRD, DCD and RRD against the reference fixtures, plus the invariants chapter 3 derives."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close, load_loss_case, loss_cases
from kdlib.losses import CRD, DCD, RRD, Embed, dcd_loss, nce_loss
from test_losses_features import check_param_grads, load_params


def distillers_key(key: str) -> str:
    """distillers' bare ``embed_s.weight`` / ``params.tau`` -> our ``embed_s.linear.weight`` / ``tau``."""
    if key.startswith("params."):
        return key[len("params."):]
    head, leaf = key.split(".")
    return f"{head}.linear.{leaf}"


# ---- CRD -----------------------------------------------------------------------------------

def test_nce_loss_alone():
    ent, a, tol = load_loss_case("crd", "crdcl_K16")
    x = torch.tensor(a["input/x"][..., 0], requires_grad=True)
    loss = nce_loss(x, ent["hparams"]["n_data"])
    loss.backward()
    assert loss.dim() == 0
    assert_close(loss.reshape(1), a, tol, "output/loss")
    assert_close(x.grad[..., None], a, tol, "grad/x")


def _crd_from_fixture():
    ent, a, tol = load_loss_case("crd", "crd_K24_nd96_d128")
    hp = ent["hparams"]
    crd = CRD(hp["ds"], hp["dt"], torch.tensor(a["input/sample_labels"]), feat_dim=hp["feat_dim"],
              K=hp["K"], T=hp["T"], momentum=hp["momentum"])
    load_params(crd, a)
    crd.memory_s.copy_(torch.tensor(a["input/memory_v1_init"]))
    crd.memory_t.copy_(torch.tensor(a["input/memory_v2_init"]))
    return crd, hp, a, tol


def test_crd_two_steps_match_reference():
    crd, hp, a, tol = _crd_from_fixture()
    for step in (1, 2):
        f_s = torch.tensor(a[f"input/feat_s_step{step}"], requires_grad=True)
        f_t = torch.tensor(a[f"input/feat_t_step{step}"])
        idx, cidx = (torch.tensor(a[f"input/{n}_step{step}"]) for n in ("idx", "contrast_idx"))
        with torch.no_grad():  # the scores this step sees, before the memories move
            o_s, o_t = crd.scores(crd.embed_s(f_s), crd.embed_t(f_t), cidx)
        crd.zero_grad()
        loss = crd(f_s, f_t, idx, cidx)
        loss.backward()
        assert_close(loss.reshape(1), a, tol, f"output/loss_step{step}")
        assert_close((o_s / crd.Z[0])[..., None], a, tol, f"output/out_s_step{step}")
        assert_close((o_t / crd.Z[1])[..., None], a, tol, f"output/out_t_step{step}")
        assert_close(f_s.grad, a, tol, f"grad/feat_s_step{step}")
        check_param_grads(crd, a, tol, suffix=f"_step{step}")
        assert_close(crd.memory_s, a, tol, f"state/memory_v1_after_step{step}")
        assert_close(crd.memory_t, a, tol, f"state/memory_v2_after_step{step}")
        params = a[f"state/params_after_step{step}"]  # [K, T, Z_s, Z_t, momentum]
        assert params[[0, 1, 4]] == pytest.approx([hp["K"], hp["T"], hp["momentum"]])
        assert_close(torch.cat([torch.tensor(params[:2]), crd.Z, torch.tensor(params[4:])]), a, tol,
                     f"state/params_after_step{step}")


def test_crd_memory_unit_norm_and_z_fixed_after_step1():
    crd, _, a, _ = _crd_from_fixture()
    assert (crd.Z < 0).all()
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        idx = torch.randperm(crd.n_data, generator=g)[:8]
        crd(torch.randn(8, 64, generator=g), torch.randn(8, 128, generator=g), idx).backward()
        if step == 0:
            z1 = crd.Z.clone()
            assert (z1 > 0).all()
        assert torch.equal(crd.Z, z1)
        norms = crd.memory_s[idx].norm(dim=1), crd.memory_t[idx].norm(dim=1)
        for n in norms:
            assert torch.allclose(n, torch.ones_like(n), atol=1e-6)


def test_crd_sampler_draws_k_distinct_other_class_negatives():
    labels = torch.arange(60) % 4  # 15 per class, 45 negatives each
    crd = CRD(8, 8, labels, feat_dim=16, K=45)  # K = every negative: the hardest case
    idx = torch.tensor([0, 5, 10, 59])
    cidx = crd.sample_contrast(idx)
    assert cidx.shape == (4, 46) and torch.equal(cidx[:, 0], idx)
    neg = cidx[:, 1:]
    assert (labels[neg] != labels[idx][:, None]).all()
    assert all(len(set(row.tolist())) == 45 for row in neg)
    small = CRD(8, 8, labels, feat_dim=16, K=7).sample_contrast(idx)[:, 1:]
    assert all(len(set(row.tolist())) == 7 for row in small)
    with pytest.raises(ValueError, match="K=46"):
        CRD(8, 8, labels, K=46)


def test_crd_resume_from_state_dict_continues_exactly():
    crd, _, a, _ = _crd_from_fixture()
    steps = [(torch.randn(8, 64), torch.randn(8, 128), torch.randperm(96)[:8]) for _ in range(2)]
    crd(*steps[0])
    resumed = CRD(64, 128, torch.tensor(a["input/sample_labels"]), K=24)
    resumed.load_state_dict(copy.deepcopy(crd.state_dict()))
    cidx = crd.sample_contrast(steps[1][2])
    assert torch.equal(crd(*steps[1], cidx), resumed(*steps[1], cidx))
    assert torch.equal(crd.memory_s, resumed.memory_s) and torch.equal(crd.Z, resumed.Z)


# ---- DCD -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", loss_cases("dcd"))
def test_dcd(case):
    ent, a, tol = load_loss_case("dcd", case)
    hp = ent["hparams"]
    dcd = DCD(hp["ds"], hp["dt"], feat_dim=hp["feat_dim"], alpha=hp["alpha"], max_tau=hp["max_tau"])
    load_params(dcd, a, rename=distillers_key)
    f_s = torch.tensor(a["input/feat_s"], requires_grad=True)
    loss = dcd(f_s, torch.tensor(a["input/feat_t"]))
    loss.backward()
    assert_close(loss, a, tol, "output/loss")
    assert_close(f_s.grad, a, tol, "grad/feat_s")
    check_param_grads(dcd, a, tol, rename=distillers_key)


def test_dcd_bias_inert_and_shift_invariant():
    dcd = DCD(16, 32, feat_dim=8)
    dcd(torch.randn(6, 16), torch.randn(6, 32)).backward()
    assert abs(dcd.b.grad.item()) < 1e-6 and dcd.tau.grad.abs().item() > 1e-4
    logits = torch.randn(6, 6)
    assert dcd_loss(logits + 3.7).item() == pytest.approx(dcd_loss(logits).item(), rel=1e-5)


# ---- RRD -----------------------------------------------------------------------------------

def _rrd_from_fixture(**kwargs):
    ent, a, tol = load_loss_case("rrd", "rrd_K64_ts0.04_tt0.10")
    hp = ent["hparams"]
    rrd = RRD(hp["ds"], hp["dt"], feat_dim=hp["feat_dim"], K=hp["K"], tau_s=hp["tau_s"], tau_t=hp["tau_t"],
              **kwargs)
    load_params(rrd, a, rename=distillers_key)
    rrd.queue.copy_(torch.tensor(a["input/queue_init"]))
    return rrd, a, tol


def test_rrd_two_steps_match_reference():
    rrd, a, tol = _rrd_from_fixture()
    for step in (1, 2):
        f_s = torch.tensor(a[f"input/feat_s_step{step}"], requires_grad=True)
        rrd.zero_grad()
        loss = rrd(f_s, torch.tensor(a[f"input/feat_t_step{step}"]))
        loss.backward()
        assert_close(loss, a, tol, f"output/loss_step{step}")
        assert_close(f_s.grad, a, tol, f"grad/feat_s_step{step}")
        check_param_grads(rrd, a, tol, suffix=f"_step{step}", rename=distillers_key)
        assert rrd.embed_t.linear.weight.grad is None and rrd.embed_t.linear.bias.grad is None
        assert_close(rrd.queue, a, tol, f"state/queue_after_step{step}")
        assert torch.equal(rrd.queue_ptr, torch.tensor(a[f"state/queue_ptr_after_step{step}"]))


def test_rrd_enqueue_before_sees_its_own_keys():
    after, a, _ = _rrd_from_fixture()
    before, _, _ = _rrd_from_fixture(enqueue="before")
    f_s, f_t = torch.tensor(a["input/feat_s_step1"]), torch.tensor(a["input/feat_t_step1"])
    with torch.no_grad():
        after._enqueue(after.embed_t(f_t))  # "before" == "after" on a queue that already holds the batch
    loss_before = before(f_s, f_t)
    assert loss_before.item() == pytest.approx(after(f_s, f_t).item(), rel=1e-6)
    assert before.queue_ptr.item() == 8 and torch.equal(before.queue[:8], after.queue[:8])


def test_rrd_sharp_teacher_gives_one_hot_target():
    rrd, a, _ = _rrd_from_fixture()
    rrd.tau_t = 1e-6
    f_s, f_t = torch.tensor(a["input/feat_s_step1"]), torch.tensor(a["input/feat_t_step1"])
    queue = rrd.queue.clone()
    with torch.no_grad():
        nearest = (rrd.embed_t(f_t) @ queue.t()).argmax(1)
        log_q = F.log_softmax(rrd.embed_s(f_s) @ queue.t() / rrd.tau_s, dim=1)
    expected = -log_q.gather(1, nearest[:, None]).mean()
    assert rrd(f_s, f_t).item() == pytest.approx(expected.item(), rel=1e-5)


def test_rrd_queue_wraps_around():
    rrd = RRD(4, 4, feat_dim=3, K=5)
    for _ in range(2):
        rrd(torch.randn(3, 4), torch.randn(3, 4))
    assert rrd.queue_ptr.item() == 1  # 6 keys into 5 slots
    assert torch.allclose(rrd.queue.norm(dim=1), torch.ones(5))  # every slot holds a real key


# ---- shared: float32 under autocast, teacher inputs constant --------------------------------

def _modules():
    crd = CRD(16, 24, torch.arange(40) % 4, feat_dim=8, K=12)
    idx = torch.arange(6)
    cidx = crd.sample_contrast(idx)  # fixed, so that repeated calls see the same negatives
    return {"crd": (crd, lambda m, s, t: m(s, t, idx, cidx)),
            "dcd": (DCD(16, 24, feat_dim=8), lambda m, s, t: m(s, t)),
            "rrd": (RRD(16, 24, feat_dim=8, K=12), lambda m, s, t: m(s, t)),
            "embed": (Embed(16, 8), lambda m, s, t: m(s).sum())}


@pytest.mark.parametrize("name", list(_modules()))
def test_float32_under_autocast_and_teacher_constant(name):
    module, call = _modules()[name]
    fresh = copy.deepcopy(module)
    f_s, f_t = torch.randn(6, 16), torch.randn(6, 24)
    expected = call(fresh, f_s, f_t).item()
    f_s16, f_t16 = f_s.bfloat16().requires_grad_(), f_t.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = call(module, f_s, f_t)  # float32 inputs: autocast must not change the result
        out = call(copy.deepcopy(module), f_s16, f_t16)
    assert same.dtype == out.dtype == torch.float32
    assert same.item() == pytest.approx(expected, rel=1e-6)
    out.backward()
    assert f_s16.grad is not None and f_t16.grad is None
