"""SDD (spp, patch_logits, sdd_weights, sdd) against the reference fixtures, plus invariants."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_close, load_loss_case, loss_cases
from kdlib import losses


def _scales(hparams):
    return tuple(json.loads(hparams["M"]))


def _linear(weight, bias, grad=False):
    fc = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(torch.from_numpy(weight))
        fc.bias.copy_(torch.from_numpy(bias))
    return fc.requires_grad_(grad)


def _categories(patch_t, target):
    """Independent count of the (global right/wrong × local right/wrong) cells, in numpy."""
    right = patch_t.argmax(1) == target[:, None]          # (B, N)
    g, local = right[:, :1], right[:, 1:]
    return {
        "global_right_local_right": int((g & right).sum()),
        "global_right_local_wrong": int((g & ~local).sum()),
        "global_wrong_local_right": int((~g & local).sum()),
        "global_wrong_local_wrong": int((~g & ~right).sum()),
    }


@pytest.mark.parametrize("case", loss_cases("sdd_spp"))
def test_spp_and_patch_logits_match_reference(case):
    ent, a, tol = load_loss_case("sdd_spp", case)
    scales = _scales(ent["hparams"])
    fmap = torch.from_numpy(a["input/fmap"])
    assert_close(losses.spp(fmap, scales), a, tol, "output/spp_features")
    fc = _linear(a["input/fc_weight"], a["input/fc_bias"])
    patch = losses.patch_logits(fmap, fc, scales)
    assert_close(patch, a, tol, "output/patch_score")
    # cell 0 is the global cell: the usual pool -> classifier
    torch.testing.assert_close(patch[:, :, 0], fc(fmap.mean((2, 3))), rtol=1e-5, atol=1e-5)


_BASE_HPARAMS = {"kd": ("T",), "dkd": ("alpha", "beta", "T"), "nkd": ("gamma", "T")}


def _base_and_hparams(case, hparams):
    base = case.split("_")[1] if case.startswith("sdd_") else hparams["kind"]
    hp = {k: hparams[k] for k in _BASE_HPARAMS[base]}
    return base, hp


@pytest.mark.parametrize("case", loss_cases("sdd_loss"))
def test_sdd_loss_matches_reference(case):
    ent, a, tol = load_loss_case("sdd_loss", case)
    base, hp = _base_and_hparams(case, ent["hparams"])
    target = torch.from_numpy(a["input/target"])
    patch_t = torch.from_numpy(a["input/patch_t"])
    assert _categories(a["input/patch_t"], a["input/target"]) == ent["facts"]["categories"]
    # the SDD repository's NKD keeps the target class; loss_corrected is the original NKD
    variants = {"": {}}
    if base == "nkd":
        variants = {"": {"drop_target": False}, "_corrected": {"drop_target": True}}
    for suffix, extra in variants.items():
        patch_s = torch.tensor(a["input/patch_s"], requires_grad=True)
        loss = losses.sdd(patch_s, patch_t, target, base=base, **hp, **extra)
        loss.backward()
        assert_close(loss, a, tol, f"output/loss{suffix}")
        assert_close(patch_s.grad, a, tol, f"grad/patch_s{suffix}")


@pytest.mark.parametrize("case", loss_cases("sdd_maps"))
def test_sdd_end_to_end_from_maps_matches_reference(case):
    ent, a, tol = load_loss_case("sdd_maps", case)
    base, hp = _base_and_hparams(case, ent["hparams"])
    if base == "nkd":
        hp["drop_target"] = False  # the fixture runs the SDD repository's SD-NKD
    scales = _scales(ent["hparams"])
    fmap_s = torch.tensor(a["input/fmap_s"], requires_grad=True)
    fc_s = _linear(a["input/fc_weight_s"], a["input/fc_bias_s"], grad=True)
    fc_t = _linear(a["input/fc_weight_t"], a["input/fc_bias_t"])
    target = torch.from_numpy(a["input/target"])
    patch_s = losses.patch_logits(fmap_s, fc_s, scales)
    with torch.no_grad():
        patch_t = losses.patch_logits(torch.from_numpy(a["input/fmap_t"]), fc_t, scales)
    loss = losses.sdd(patch_s, patch_t, target, base=base, **hp)
    loss.backward()
    assert _categories(patch_t.numpy(), a["input/target"]) == ent["facts"]["categories"]
    assert_close(patch_s, a, tol, "output/patch_s")
    assert_close(patch_t, a, tol, "output/patch_t")
    assert_close(loss, a, tol, "output/loss")
    assert_close(fmap_s.grad, a, tol, "grad/fmap_s")
    assert_close(fc_s.weight.grad, a, tol, "grad/fc_weight_s")
    assert_close(fc_s.bias.grad, a, tol, "grad/fc_bias_s")


# ---- invariants (closed forms each chapter derives) -------------------------------------------------

def _rows(patch):
    """(B, K, N) -> (B·N, K): every cell as a sample."""
    return patch.transpose(1, 2).reshape(-1, patch.shape[1])


def _patches(B=8, K=10, N=5):
    return 3 * torch.randn(B, K, N), 3 * torch.randn(B, K, N), torch.randint(0, K, (B,))


def test_sd_kd_and_sd_dkd_with_the_global_cell_only_equal_kd_and_dkd():
    fmap_s, fmap_t = torch.randn(8, 16, 4, 4), torch.randn(8, 16, 8, 8)
    fc = nn.Linear(16, 10)
    with torch.no_grad():
        ps, pt = losses.patch_logits(fmap_s, fc, (1,)), losses.patch_logits(fmap_t, fc, (1,))
    y = torch.randint(0, 10, (8,))
    zs, zt = ps[:, :, 0], pt[:, :, 0]
    torch.testing.assert_close(losses.sdd(ps, pt, y, base="kd"), losses.kd(zs, zt))
    torch.testing.assert_close(losses.sdd(ps, pt, y, base="dkd", beta=6.0),
                               losses.dkd(zs, zt, y, beta=6.0))
    torch.testing.assert_close(losses.sdd(ps, pt, y, base="nkd", T=4.0),
                               losses.nkd(zs, zt, y, T=4.0))


def test_weights_partition_cells_into_consistent_and_complementary():
    _, pt, y = _patches(N=21)
    w = losses.sdd_weights(pt, y, complementary_weight=2.0)
    cat = _categories(pt.numpy(), y.numpy())
    assert w.shape == (8, 21) and sum(cat.values()) == w.numel()
    assert set(w.unique().tolist()) <= {1.0, 2.0}
    assert (w[:, 0] == 1).all()
    assert int((w == 2).sum()) == cat["global_right_local_wrong"] + cat["global_wrong_local_right"]
    assert int((w == 1).sum()) == cat["global_right_local_right"] + cat["global_wrong_local_wrong"]


def test_all_weights_one_when_teacher_right_everywhere_and_local_equals_global():
    ps, _, y = _patches()
    pt = torch.zeros(8, 10, 5)
    pt[torch.arange(8), y, :] = 5.0  # every cell predicts the label, as the global cell does
    assert (losses.sdd_weights(pt, y) == 1).all()
    torch.testing.assert_close(losses.sdd(ps, pt, y), losses.kd(_rows(ps), _rows(pt)))


def test_complementary_weight_scales_only_complementary_cells():
    ps, pt, y = _patches()
    comp = losses.sdd_weights(pt, y) == 2
    extra = losses.kd_per_sample(_rows(ps), _rows(pt))[comp.flatten()].sum() / 40
    difference = losses.sdd(ps, pt, y, complementary_weight=3.0) - losses.sdd(ps, pt, y)
    torch.testing.assert_close(difference, extra)


def test_spp_cells_are_averages_of_the_map():
    fmap = torch.randn(2, 3, 8, 8)
    cells = losses.spp(fmap, (1, 2, 4))
    assert cells.shape == (2, 3, 21)
    torch.testing.assert_close(cells[:, :, 0], fmap.mean((2, 3)))
    torch.testing.assert_close(cells[:, :, 2], fmap[:, :, :4, 4:].mean((2, 3)))  # 2×2 cell (0, 1)
    torch.testing.assert_close(cells[:, :, 12], fmap[:, :, 2:4, 6:].mean((2, 3)))  # 4×4 cell (1, 3)
    tiny = losses.spp(torch.randn(2, 3, 2, 2))  # a 2×2 map: the 4×4 cells repeat its pixels
    fine, coarse = tiny[:, :, 5:].unflatten(2, (4, 4)), tiny[:, :, 1:5].unflatten(2, (2, 2))
    torch.testing.assert_close(fine[:, :, ::2, ::2], coarse)


def test_bad_arguments_raise_clear_errors():
    ps, pt, y = _patches()
    with pytest.raises(ValueError, match="kd, dkd, nkd"):
        losses.sdd(ps, pt, y, base="crd")
    with pytest.raises(ValueError, match="start with 1"):
        losses.spp(torch.randn(2, 3, 8, 8), (2, 4))


# ---- float32 under autocast, and no gradient to the teacher ---------------------------------

def test_float32_under_autocast():
    fmap_s, fmap_t = torch.randn(8, 16, 4, 4), torch.randn(8, 16, 8, 8)
    fc = nn.Linear(16, 10)
    y = torch.randint(0, 10, (8,))

    def run(fs, ft):
        return losses.sdd(losses.patch_logits(fs, fc), losses.patch_logits(ft, fc), y, base="dkd")

    fs, ft = fmap_s.bfloat16(), fmap_t.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        patch = losses.patch_logits(fs, fc)
        loss = run(fs, ft)
    assert patch.dtype == loss.dtype == torch.float32
    torch.testing.assert_close(loss, run(fs.float(), ft.float()))


@pytest.mark.parametrize("base", ["kd", "dkd", "nkd"])
def test_no_gradient_reaches_the_teacher(base):
    ps, pt, y = (x.requires_grad_() if x.is_floating_point() else x for x in _patches())
    losses.sdd(ps, pt, y, base=base).backward()
    assert pt.grad is None and ps.grad.abs().sum() > 0
    assert np.isfinite(ps.grad.numpy()).all()
