"""Feature losses (CD and the chapter-3 baselines) against the reference fixtures, plus invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_close, load_loss_case, loss_cases
from kdlib.losses import (ABConnector, CDConnector, ConvReg, Paraphraser, Translator, VID, ab, at, cd,
                          fsp, ft, hint, nst)


# ---- helpers -------------------------------------------------------------------------------

def stages(a: dict, side: str, grad: bool) -> list[torch.Tensor]:
    """``input/feat_<side>_<i>`` arrays as tensors, in stage order."""
    n = sum(k.startswith(f"input/feat_{side}_") for k in a)
    return [torch.tensor(a[f"input/feat_{side}_{i}"], requires_grad=grad) for i in range(n)]


def load_params(module: nn.Module, a: dict, prefix: str = "", rename=lambda k: k) -> None:
    """Copy every ``param/<prefix><key>`` array into ``module``'s entry ``rename(key)``.

    Every parameter of ``module`` must be set; buffers the fixture does not list (memories,
    queues) are left to the caller.
    """
    sd, assigned = module.state_dict(), set()
    for k, v in a.items():
        if k.startswith("param/" + prefix):
            key = rename(k[len("param/" + prefix):])
            assert key in sd, key
            sd[key], assigned = torch.tensor(v), assigned | {key}
    assert {n for n, _ in module.named_parameters()} <= assigned
    module.load_state_dict(sd)


def check_param_grads(module: nn.Module, a: dict, tol: dict, prefix: str = "", suffix: str = "",
                      rename=lambda k: k) -> None:
    """Compare every ``grad_param/<prefix><key><suffix>`` with the gradient of ``rename(key)``."""
    params = dict(module.named_parameters())
    names = [k for k in tol if k.startswith("grad_param/" + prefix) and k.endswith(suffix)]
    assert names
    for name in names:
        grad = params[rename(name[len("grad_param/" + prefix):len(name) - len(suffix)])].grad
        if tol[name].get("numerically_zero"):  # zero in exact arithmetic (bias before train-mode BN, DCD's b)
            assert grad.abs().max().item() <= tol[name]["atol"], name
        else:
            assert_close(grad, a, tol, name)


def check_list(losses: list[torch.Tensor], a: dict, tol: dict) -> None:
    """Compare each per-stage loss and their sum, then backpropagate the sum (as training does)."""
    for i, loss in enumerate(losses):
        assert loss.dtype == torch.float32 and loss.dim() == 0
        assert_close(loss, a, tol, f"output/loss_{i}")
    total = sum(losses)
    assert_close(total, a, tol, "output/loss_sum")
    total.backward()


def check_stage_grads(feats_s, a, tol) -> None:
    for i, f in enumerate(feats_s):
        assert_close(f.grad, a, tol, f"grad/feat_s_{i}")


# ---- fixtures ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", loss_cases("fitnet"))
def test_fitnet(case):
    ent, a, tol = load_loss_case("fitnet", case)
    hp = ent["hparams"]
    f_s, f_t = torch.tensor(a["input/feat_s"], requires_grad=True), torch.tensor(a["input/feat_t"])
    mapped, reg = f_s, None
    if hp["regressor"]:
        reg = ConvReg(hp["s_shape"], hp["t_shape"]).train()
        load_params(reg, a, "regressor.")
        mapped = reg(f_s)
        assert_close(mapped, a, tol, "output/regressed")
    loss = hint(mapped, f_t)
    loss.backward()
    assert_close(loss, a, tol, "output/loss")
    assert_close(f_s.grad, a, tol, "grad/feat_s")
    if reg is not None:
        check_param_grads(reg, a, tol, "regressor.")
        assert_close(reg.bn.running_mean, a, tol, "state/regressor.bn.running_mean_after")
        assert_close(reg.bn.running_var, a, tol, "state/regressor.bn.running_var_after")


@pytest.mark.parametrize("family, case", [(f, c) for f in ("at", "nst", "fsp") for c in loss_cases(f)])
def test_stage_list_losses(family, case):
    ent, a, tol = load_loss_case(family, case)
    fn = {"at": at, "nst": nst, "fsp": fsp}[family]
    kwargs = {"p": ent["hparams"]["p"]} if family == "at" else {}
    feats_s = stages(a, "s", True)
    check_list(fn(feats_s, stages(a, "t", False), **kwargs), a, tol)
    check_stage_grads(feats_s, a, tol)


@pytest.mark.parametrize("case", loss_cases("ab"))
def test_ab(case):
    ent, a, tol = load_loss_case("ab", case)
    hp = ent["hparams"]
    feats_s = stages(a, "s", True)
    mapped, connector = feats_s, None
    if hp["connector"]:
        connector = ABConnector(hp["s_shapes"], hp["t_shapes"]).train()
        load_params(connector, a, "connector.")
        mapped = connector(feats_s)
    check_list(ab(mapped, stages(a, "t", False), margin=hp["margin"]), a, tol)
    check_stage_grads(feats_s, a, tol)
    if connector is not None:
        check_param_grads(connector, a, tol, "connector.")


@pytest.mark.parametrize("case", loss_cases("ft"))
def test_ft(case):
    ent, a, tol = load_loss_case("ft", case)
    hp = ent["hparams"]
    if hp["mode"] == "factors":
        f_s = torch.tensor(a["input/factor_s"], requires_grad=True)
        loss = ft(f_s, torch.tensor(a["input/factor_t"]), p=hp["p2"])
        loss.backward()
        assert_close(loss, a, tol, "output/loss")
        assert_close(f_s.grad, a, tol, "grad/factor_s")
        return
    f_s, f_t = torch.tensor(a["input/feat_s"], requires_grad=True), torch.tensor(a["input/feat_t"])
    para = Paraphraser(hp["t_shape"][0], k=hp["k"])
    load_params(para, a, "paraphraser.")
    if hp["mode"] == "paraphraser_init":
        _, rec = para(f_t)
        loss = nn.functional.mse_loss(rec, f_t)
        loss.backward()
        assert_close(rec, a, tol, "output/reconstruction")
        assert_close(loss, a, tol, "output/loss")
        check_param_grads(para, a, tol, "paraphraser.")
        return
    para.requires_grad_(False)  # frozen in the main stage
    trans = Translator(hp["s_shape"][0], hp["t_shape"][0], k=hp["k"]).train()
    load_params(trans, a, "translator.")
    factor_s, factor_t = trans(f_s), para.factor(f_t)
    loss = ft(factor_s, factor_t, p=hp["p2"])
    loss.backward()
    assert_close(factor_s, a, tol, "output/factor_s")
    assert_close(factor_t, a, tol, "output/factor_t")
    assert_close(loss, a, tol, "output/loss")
    assert_close(f_s.grad, a, tol, "grad/feat_s")
    check_param_grads(trans, a, tol, "translator.")


def test_vid():
    ent, a, tol = load_loss_case("vid", "vid_3stages")
    hp = ent["hparams"]
    vid = VID([s[0] for s in hp["s_shapes"]], [t[0] for t in hp["t_shapes"]])
    for i, stage in enumerate(vid.stages):  # our init_var=5.0 is the reference's constructor value
        np.testing.assert_allclose(stage.log_scale.detach().numpy(), a[f"param/vid.{i}.log_scale_init"], rtol=1e-6)
    a = {k: v for k, v in a.items() if not k.endswith("log_scale_init")}

    def rename(key):  # the reference's vid.<i>. -> stages.<i>.
        return "stages." + key
    load_params(vid, a, "vid.", rename)
    feats_s = stages(a, "s", True)
    check_list(vid(feats_s, stages(a, "t", False)), a, tol)
    check_stage_grads(feats_s, a, tol)
    check_param_grads(vid, a, tol, "vid.", rename=rename)


@pytest.mark.parametrize("case", loss_cases("cd"))
def test_cd(case):
    ent, a, tol = load_loss_case("cd", case)
    feats_s = stages(a, "s", True)
    mapped, connectors = feats_s, None
    if ent["hparams"]["connector"]:
        connectors = nn.ModuleList(CDConnector(c_s, c_t) for c_s, c_t in ent["hparams"]["pairs"]).train()
        load_params(connectors, a, "connector.")
        mapped = [c(f) for c, f in zip(connectors, feats_s)]
    loss = cd(mapped, stages(a, "t", False))
    loss.backward()
    assert_close(loss, a, tol, "output/loss")
    check_stage_grads(feats_s, a, tol)
    if connectors is not None:
        check_param_grads(connectors, a, tol, "connector.")
        for i, c in enumerate(connectors):
            assert_close(c[1].running_mean, a, tol, f"state/connector.{i}.1.running_mean_after")
            assert_close(c[1].running_var, a, tol, f"state/connector.{i}.1.running_var_after")


# ---- invariants ----------------------------------------------------------------------------

def test_cd_identity_connector_gives_zero():
    x = torch.rand(4, 6, 5, 5)  # post-ReLU teacher maps are non-negative
    conn = CDConnector(6, 6).eval()
    with torch.no_grad():
        conn[0].weight.copy_(torch.eye(6)[:, :, None, None])
        conn[1].running_var.fill_(1 - conn[1].eps)  # BN(x) = x exactly
    assert cd([conn(x)], [x]).item() == pytest.approx(0.0, abs=1e-12)
    assert cd([x + 1], [x]).item() == pytest.approx(1.0)


def test_convreg_picks_the_reference_convolution():
    assert isinstance(ConvReg((16, 4, 4), (32, 8, 8)).conv, nn.ConvTranspose2d)
    assert ConvReg((16, 8, 8), (24, 4, 4)).conv.stride == (2, 2)
    assert ConvReg((16, 8, 8), (32, 6, 6)).conv.kernel_size == (3, 3)
    assert ConvReg((64, 16, 8, 8), (64, 32, 8, 8)).conv.kernel_size == (1, 1)  # (N, C, H, W) accepted
    with pytest.raises(ValueError, match="ConvReg"):
        ConvReg((16, 2, 2), (16, 8, 8))


def test_bad_inputs_raise():
    x = [torch.randn(2, 4, 4, 4)]
    with pytest.raises(ValueError, match="stages"):
        at(x, x + x)
    with pytest.raises(ValueError, match="channel"):
        fsp([torch.randn(2, 4, 4, 4)] * 2, [torch.randn(2, 8, 4, 4)] * 2)


def test_ab_margin_semantics():
    # teacher off (t <= 0): penalise s > -m by (s+m)²; teacher on: penalise s <= m by (s-m)²
    s = torch.tensor([-2.0, 0.0, 0.5, 2.0]).view(1, 4, 1, 1)
    t_off, t_on = -torch.ones_like(s), torch.ones_like(s)
    scale = 3 / 1000
    assert ab([s], [t_off])[0].item() == pytest.approx((1 + 1.5 ** 2 + 9) * scale)
    assert ab([s], [t_on])[0].item() == pytest.approx((9 + 1 + 0.25) * scale)
    # the last stage has weight 1, the one before 1/2
    two = ab([s, s], [t_off, t_off])
    assert two[0].item() == pytest.approx(two[1].item() / 2)


def _feature_cases():
    """name -> (loss_fn(student maps, teacher maps) -> scalar, student maps, teacher maps)."""
    g = torch.Generator().manual_seed(1)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    def maps(*shapes):
        return [r(2, *s) for s in shapes]
    reg, abc = ConvReg((4, 8, 8), (6, 4, 4)), ABConnector([(4, 8, 8)], [(6, 4, 4)])
    vid, trans, para = VID([4, 8], [6, 8]), Translator(4, 6), Paraphraser(6)
    conn = CDConnector(4, 6)
    return {
        "hint": (lambda s, t: hint(reg(s[0]), t[0]), maps((4, 8, 8)), maps((6, 4, 4))),
        "at": (lambda s, t: sum(at(s, t)), maps((4, 8, 8), (8, 4, 4)), maps((6, 4, 4), (8, 4, 4))),
        "nst": (lambda s, t: sum(nst(s, t)), maps((4, 8, 8)), maps((6, 4, 4))),
        "fsp": (lambda s, t: sum(fsp(s, t)), maps((4, 8, 8), (6, 4, 4)), maps((4, 4, 4), (6, 2, 2))),
        "ab": (lambda s, t: sum(ab(abc(s), t)), maps((4, 8, 8)), maps((6, 4, 4))),
        "ft": (lambda s, t: ft(trans(s[0]), para.factor(t[0])), maps((4, 8, 8)), maps((6, 4, 4))),
        "vid": (lambda s, t: sum(vid(s, t)), maps((4, 8, 8), (8, 2, 2)), maps((6, 4, 4), (8, 4, 4))),
        "cd": (lambda s, t: cd([conn(s[0])], t), maps((4, 8, 8)), maps((6, 4, 4))),
    }


@pytest.mark.parametrize("name", list(_feature_cases()))
def test_float32_under_autocast_and_teacher_constant(name):
    fn, feats_s, feats_t = _feature_cases()[name]
    expected = fn(feats_s, feats_t).item()
    feats_s16 = [f.bfloat16().requires_grad_() for f in feats_s]
    feats_t16 = [f.bfloat16().requires_grad_() for f in feats_t]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = fn(feats_s, feats_t)  # float32 inputs: autocast must not change the result
        out = fn(feats_s16, feats_t16)
    assert same.dtype == out.dtype == torch.float32
    assert same.item() == pytest.approx(expected, rel=1e-6)
    out.backward()
    assert all(f.grad is not None for f in feats_s16)
    assert all(f.grad is None for f in feats_t16)
