"""SSKD (SSKDHead, sskd, sskd_head_loss) against the reference fixture, plus invariants."""
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close, load_loss_case, loss_cases
from kdlib import losses

WEIGHTS = {"ce": 0.1, "kd": 0.9, "tf": 2.7, "ss": 10.0}  # the paper's CIFAR-100 loss weights


def _total(terms):
    return sum(w * getattr(terms, name) for name, w in WEIGHTS.items())


@pytest.mark.parametrize("case", loss_cases("sskd"))
def test_sskd_matches_reference(case):
    ent, a, tol = load_loss_case("sskd", case)
    hp = ent["hparams"]
    assert {k: hp[f"{k}_w"] for k in WEIGHTS} == WEIGHTS
    logits_s = torch.tensor(a["input/logits_s"], requires_grad=True)
    proj_s = torch.tensor(a["input/proj_s"], requires_grad=True)
    terms = losses.sskd(logits_s, torch.from_numpy(a["input/logits_t"]), proj_s,
                        torch.from_numpy(a["input/proj_t"]), torch.from_numpy(a["input/target"]),
                        **{k: hp[k] for k in ("kd_T", "tf_T", "ss_T", "ratio_tf", "ratio_ss")})
    total = _total(terms)
    total.backward()
    for i, name in enumerate(WEIGHTS, start=1):
        assert_close(getattr(terms, name), a, tol, f"output/loss{i}")
    assert_close(total, a, tol, "output/loss")
    assert terms.keep_tf.nonzero().flatten().tolist() == a["output/distill_index_tf"].tolist()
    assert terms.keep_ss.nonzero().flatten().tolist() == a["output/distill_index_ss"].tolist()
    assert_close(logits_s.grad, a, tol, "grad/logits_s")
    assert_close(proj_s.grad, a, tol, "grad/proj_s")


# ---- invariants ----------------------------------------------------------------------------

def _batch(B=6, K=10, d=16, requires_grad=False):
    x = [torch.randn(4 * B, K), torch.randn(4 * B, K), torch.randn(4 * B, d), torch.randn(4 * B, d)]
    if requires_grad:
        x[0].requires_grad_(), x[2].requires_grad_()
    return (*x, torch.randint(0, K, (B,)))


def test_ratios_one_keep_every_rotated_row():
    terms = losses.sskd(*_batch(), ratio_tf=1.0, ratio_ss=1.0)
    assert terms.keep_tf.all() and terms.keep_ss.all() and terms.keep_tf.shape == (18,)


def test_selection_keeps_right_rows_and_the_least_wrong():
    logits_s, logits_t, proj_s, proj_t, y = _batch()
    rotated_t = logits_t.unflatten(0, (-1, 4))[:, 1:].flatten(0, 1)
    truth = y.repeat_interleave(3)
    rank = (rotated_t > rotated_t.gather(1, truth[:, None])).sum(1)
    for ratio in (0.0, 0.5, 0.75):
        keep = losses.sskd(logits_s, logits_t, proj_s, proj_t, y, ratio_tf=ratio).keep_tf
        wrong = int((rank > 0).sum())
        assert int(keep.sum()) == 18 - wrong + int(wrong * ratio)
        assert keep[rank == 0].all()
        if (~keep).any():
            assert rank[keep].max() <= rank[~keep].min()


def test_similarity_targets_are_the_source_images():
    """Rotated row i of the 3B×B similarity matrix belongs to image ⌊i/3⌋: embeddings equal to
    their source image's make that entry the row's maximum, and the head loss is smallest."""
    B, d = 5, 8
    images = F.normalize(torch.randn(B, d), dim=1)
    aligned = images.repeat_interleave(4, 0)
    logits = torch.randn(4 * B, 10)
    y = torch.randint(0, 10, (B,))
    terms = losses.sskd(logits, logits, aligned, aligned, y, ratio_ss=0.0)
    assert terms.keep_ss.all()  # the teacher ranks every source image first
    assert abs(terms.ss.item()) < 1e-6 and abs(terms.kd.item()) < 1e-6
    shuffled = aligned[torch.randperm(4 * B)]
    assert losses.sskd_head_loss(aligned) < losses.sskd_head_loss(shuffled)
    rotated = aligned.unflatten(0, (B, 4))[:, 1:].flatten(0, 1)
    sim = F.cosine_similarity(rotated[:, None], images[None], dim=2)
    expected = F.cross_entropy(sim, torch.arange(3 * B) // 3)
    torch.testing.assert_close(losses.sskd_head_loss(aligned), expected)


def test_terms_are_kd_on_the_right_rows():
    logits_s, logits_t, proj_s, proj_t, y = _batch()
    terms = losses.sskd(logits_s, logits_t, proj_s, proj_t, y)
    nor = slice(0, None, 4)
    torch.testing.assert_close(terms.ce, F.cross_entropy(logits_s[nor], y))
    torch.testing.assert_close(terms.kd, losses.kd(logits_s[nor], logits_t[nor], T=4.0))
    rotated = torch.arange(24) % 4 != 0
    torch.testing.assert_close(terms.tf, losses.kd(logits_s[rotated], logits_t[rotated], T=4.0))


def test_head_shapes_and_parameters():
    head = losses.SSKDHead(32)
    assert head(torch.randn(8, 32)).shape == (8, 32)
    assert [tuple(p.shape) for p in head.parameters()] == [(32, 32), (32,), (32, 32), (32,)]


# ---- float32 under autocast, and no gradient to the teacher ---------------------------------

def test_float32_under_autocast():
    logits_s, logits_t, proj_s, proj_t, y = _batch()
    low = [x.bfloat16() for x in (logits_s, logits_t, proj_s, proj_t)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = losses.sskd(*low, y)
        head = losses.sskd_head_loss(low[2])
    reference = losses.sskd(*(x.float() for x in low), y)
    for name in WEIGHTS:
        assert getattr(terms, name).dtype == torch.float32
        torch.testing.assert_close(getattr(terms, name), getattr(reference, name))
    assert head.dtype == torch.float32


def test_no_gradient_reaches_the_teacher():
    logits_s, logits_t, proj_s, proj_t, y = _batch(requires_grad=True)
    logits_t.requires_grad_(), proj_t.requires_grad_()
    _total(losses.sskd(logits_s, logits_t, proj_s, proj_t, y)).backward()
    assert logits_t.grad is None and proj_t.grad is None
    assert logits_s.grad.abs().sum() > 0 and proj_s.grad.abs().sum() > 0


def test_sskd_head_accuracy_closed_forms():
    """One-hot image identities: every rotated row finds its own image (100 %); identities
    shifted by one image: none does (0 %)."""
    B = 6
    identity = torch.eye(B).repeat_interleave(4, 0)
    shifted = identity.unflatten(0, (B, 4)).clone()
    shifted[:, 0] = shifted[:, 0].roll(1, 0)
    assert float(losses.sskd_head_accuracy(identity)) == 100.0
    assert float(losses.sskd_head_accuracy(shifted.flatten(0, 1))) == 0.0
