"""The method registry: every method trains end to end on same- and cross-family pairs,
schedules scale with the run, combinations are sums of parts, per-pair values are picked up."""
from __future__ import annotations

import pytest
import torch

from kdlib import data, losses, methods
from kdlib.methods import Batch, SetupInfo
from kdlib.models import create_model
from kdlib.train import RECIPES, Options, distill

K = 10
ALL = set(methods.list_methods())  # the registry, not a hand-kept list
SAME = ("resnet20", "resnet8")
CROSS = [("resnet20", "MobileNetV2"), ("vgg8", "resnet8")]   # 3 -> 4 and 4 -> 3 stages
STAGE_METHODS = ["at", "nst", "vid", "ab", "fsp", "cd", "cd+gkd+edt", "fitnet", "sp", "ft"]
TRAIN_LABELS = torch.arange(64) % K


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a shared CPU waiting threads cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(name: str, **overrides) -> methods.Method:
    """``create`` with memory sizes that fit a 64-sample training split."""
    sizes = {k: 16 for k in methods.defaults(name) if k.endswith("nce_k")}
    return methods.create(name, **{**sizes, **overrides})


def nets(pair):
    torch.manual_seed(0)
    return create_model(pair[0], K, 1), create_model(pair[1], K, 1)


def setup(method, teacher, student, pair, steps=240):
    """Probe forward on 2 images and ``setup``, as the trainer does (a run of ``steps`` optimizer
    steps, one per paper epoch by default); returns the SetupInfo."""
    x = torch.randn(8 if method.needs_rotations else 2, 1, 32, 32)
    with torch.no_grad():
        fs = student.eval().forward_features(x, preact=method.needs_preact)
        ft = teacher.eval().forward_features(x, preact=method.needs_preact)
    info = SetupInfo(fs, ft, K, TRAIN_LABELS, steps, lr=0.05, classifier_s=student.classifier,
                     classifier_t=teacher.classifier, arch_s=pair[1], arch_t=pair[0])
    method.setup(info)
    return info


def batch(method, n=4):
    images = torch.randn(4 * n if method.needs_rotations else n, 1, 32, 32)
    return Batch(images, torch.randint(0, K, (n,)), torch.arange(n) * 7)


def features(method, teacher, student, b):
    """Teacher under no_grad in its mode; the student in train mode."""
    teacher.train(method.teacher_train_mode)
    with torch.no_grad():
        ft = teacher.forward_features(b.images, preact=method.needs_preact)
    fs = student.train().forward_features(b.images, preact=method.needs_preact)
    return fs, ft


def step(name, pair, epoch=100):
    """One training step end to end; the teacher's parameters are left trainable on purpose,
    so any gradient reaching them would show."""
    teacher, student = nets(pair)
    method = small(name)
    setup(method, teacher, student, pair)
    b = batch(method)
    fs, ft = features(method, teacher, student, b)
    terms = method(b, fs, ft, epoch)
    sum(terms.values()).backward()
    return method, teacher, student, terms


def assert_no_teacher_grad(teacher):
    assert all(p.grad is None for p in teacher.parameters())


# ---- registry and errors --------------------------------------------------------------------

def test_every_method_class_registers_itself():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    named = {c.name for c in subclasses(methods.Method) if "name" in c.__dict__ and c is not methods.Combo}
    assert named <= ALL and "vanilla" in ALL and {"crd+kd", "cd+gkd+edt", "wttm+crd"} <= ALL
    with pytest.raises(ValueError, match="registered twice"):
        class Again(methods.KD):
            name = "kd"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown method 'kdd'; valid methods: .*crd\+kd.*wttm"):
        methods.create("kdd")


@pytest.mark.parametrize("name, bad", [("kd", "temperature"), ("crd+kd", "kd__temperature"), ("crd+kd", "T")])
def test_unknown_hyperparameter_lists_the_valid_ones(name, bad):
    with pytest.raises(ValueError, match=rf"no hyperparameter '{bad}'; valid: ce_weight, .*"):
        methods.create(name, **{bad: 1.0})


def test_bad_stage_alignment_is_refused():
    with pytest.raises(ValueError, match="stage_align must be one of 'first', 'last'"):
        methods.create("at", stage_align="middle")


def test_config_records_every_hyperparameter():
    m = methods.create("dkd", beta=2.0)
    assert m.config == {"name": "dkd", "ce_weight": 1.0, "alpha": 1.0, "beta": 2.0, "T": 4.0, "warmup_epochs": 20,
                        "schedule": "steps"}
    assert "schedule" not in methods.create("kd").config and "schedule" not in methods.create("sd-kd").config


def test_one_setting_one_config():
    """T=2 and T=2.0, a list and a tuple of scales: the same config, hence the same record key."""
    assert methods.create("kd", T=2).config == methods.create("kd", T=2.0).config
    assert methods.create("kd", T=2).T == 2.0 and isinstance(methods.create("kd", T=2).T, float)
    assert methods.create("sd-kd", scales=[1, 2]).config == methods.create("sd-kd", scales=(1, 2)).config
    assert methods.create("crd+kd", kd__T=3).config["kd__T"] == 3.0
    with pytest.raises(ValueError, match=r"method 'kd': hyperparameter T='4' has the wrong type; expected a number"):
        methods.create("kd", T="4")
    with pytest.raises(ValueError, match="nce_k=16384.5 has the wrong type; expected an int"):
        methods.create("crd", nce_k=16384.5)


def test_a_new_hyperparameter_at_its_neutral_value_keeps_the_keys():
    """Declared in key_neutral, a hyperparameter added later is left out of the config (hence
    of the key) at the value that reproduces the stored records."""
    class KDWithClip(methods.KD, register=False):
        key_neutral = {"clip": None}

        def __init__(self, ce_weight=0.1, kd_weight=0.9, T=4.0, clip=None):
            super().__init__(ce_weight, kd_weight, T)

    methods._METHODS["kd-test-neutral"] = KDWithClip
    try:
        plain = {**methods.create("kd").config, "name": "kd-test-neutral"}
        assert methods.create("kd-test-neutral").config == plain
        assert methods.create("kd-test-neutral", clip=1.0).config == {**plain, "clip": 1.0}
    finally:
        del methods._METHODS["kd-test-neutral"]


# ---- one step of every method ---------------------------------------------------------------

def check_step(name, pair):
    method, teacher, student, terms = step(name, pair)
    assert set(terms) == set(method.terms) and len(method.terms) == len(set(method.terms))
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values()), terms
    assert all(p.grad is not None for p in student.parameters())
    trainable = [n for n, p in method.named_parameters() if p.requires_grad]
    assert all(dict(method.named_parameters())[n].grad is not None for n in trainable), trainable
    assert_no_teacher_grad(teacher)
    for rrd in (m for m in method.modules() if isinstance(m, losses.RRD)):
        assert all(p.grad is None for p in rrd.embed_t.parameters())
    return method


@pytest.mark.parametrize("name", sorted(ALL))
def test_one_step_same_family(name):
    method = check_step(name, SAME)
    assert method.needs_teacher == (name != "vanilla")


@pytest.mark.parametrize("name", sorted(ALL - {"fsp"}))
def test_one_step_resnet_to_mobilenet(name):
    check_step(name, CROSS[0])


@pytest.mark.parametrize("name", sorted(set(STAGE_METHODS) - {"fsp"}))
def test_one_step_vgg_to_resnet(name):
    check_step(name, CROSS[1])


@pytest.mark.parametrize("pair", CROSS)
def test_fsp_refuses_pairs_whose_channels_differ(pair):
    teacher, student = nets(pair)
    with pytest.raises(ValueError, match=rf"method 'fsp' cannot distil teacher {pair[0]} into student {pair[1]}: "
                                         "FSP needs equal channel counts"):
        setup(methods.create("fsp"), teacher, student, pair)


def test_unnamed_networks_are_described_by_their_stages():
    teacher, student = nets(CROSS[0])
    x = torch.randn(2, 1, 32, 32)
    info = SetupInfo(student.forward_features(x), teacher.forward_features(x), K, TRAIN_LABELS, steps=240)
    with pytest.raises(ValueError, match="cannot distil teacher a network with stages 16x32x32, 32x16x16, 64x8x8 "
                                         "into student a network with stages 12x16x16"):
        methods.create("fsp").setup(info)


def test_sdd_needs_the_classifiers():
    teacher, student = nets(SAME)
    x = torch.randn(2, 1, 32, 32)
    info = SetupInfo(student.forward_features(x), teacher.forward_features(x), K, TRAIN_LABELS, steps=240)
    with pytest.raises(ValueError, match="'sd-kd' needs SetupInfo.classifier_s"):
        methods.create("sd-kd").setup(info)


@pytest.mark.parametrize("pair", [SAME, CROSS[0]])
def test_sdd_on_the_global_cell_alone_is_the_base_loss(pair):
    teacher, student = nets(pair)
    sdkd, sddkd = methods.create("sd-kd", scales=(1,)), methods.create("sd-dkd", scales=(1,))
    setup(sdkd, teacher, student, pair)
    setup(sddkd, teacher, student, pair)
    b = batch(sdkd)
    fs, ft = features(sdkd, teacher, student, b)
    torch.testing.assert_close(sdkd(b, fs, ft, 1)["sdd"], 0.9 * losses.kd(fs.logits, ft.logits, 4.0))
    torch.testing.assert_close(sddkd(b, fs, ft, 20)["sdd"], losses.dkd(fs.logits, ft.logits, b.labels))


def test_stages_are_aligned_explicitly():
    s, t = [1, 2, 3], ["a", "b", "c", "d"]
    assert methods.align_stages(s, t, "first") == ([1, 2, 3], ["a", "b", "c"])
    assert methods.align_stages(s, t, "last") == ([1, 2, 3], ["b", "c", "d"])
    cd = methods.create("cd")
    teacher, student = nets(CROSS[0])
    setup(cd, teacher, student, CROSS[0])
    assert [c[0].out_channels for c in cd.connectors] == [16, 32, 64]       # resnet20's stages
    assert [c[0].in_channels for c in cd.connectors] == [16, 48, 160]       # MobileNetV2's last three


def test_trainer_flags():
    assert methods.create("sd-kd").grad_clip == 40.0 and methods.create("sd-dkd", grad_clip=None).grad_clip is None
    assert methods.create("kd").grad_clip is None
    assert methods.create("cd").teacher_train_mode and methods.create("cd+gkd+edt").teacher_train_mode
    assert not methods.create("cd", teacher_train_mode=False).teacher_train_mode
    assert not methods.create("gkd").teacher_train_mode and not methods.create("kd").teacher_train_mode
    assert methods.create("ab").needs_preact and methods.create("sskd").needs_rotations


# ---- init stages ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, pair", [("ab", SAME), ("ab", CROSS[0]), ("ab", CROSS[1]), ("fsp", SAME),
                                        ("ft", SAME), ("ft", CROSS[0]), ("sskd", SAME)])
def test_init_stage_trains_its_modules_only(name, pair):
    teacher, student = nets(pair)
    method = methods.create(name)
    setup(method, teacher, student, pair)
    frozen = [p for p in method.parameters() if not p.requires_grad]
    stage = method.init_stage(student)
    b = batch(method)
    fs, ft = features(method, teacher, student, b)
    loss = sum(stage.loss(b, fs, ft).values())
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in frozen)          # init-only modules: frozen before, trained here
    assert any(p.grad is not None for p in stage.parameters)
    assert student.classifier.weight.grad is None
    assert_no_teacher_grad(teacher)


def test_init_stage_lengths_scale_with_the_run_in_steps():
    teacher, student = nets(SAME)
    for steps, expected in ((240, 30), (8 * 32, 32), (1, 2)):
        for name in ("ab", "ft", "fsp"):
            method = methods.create(name)
            setup(method, teacher, student, SAME, steps)
            assert method.init_stage(student).steps == expected
    sskd = methods.create("sskd")
    for steps, length, milestones in ((240, 60, (30, 45)), (8 * 32, 64, (32, 48)), (1, 2, (2, 2))):
        setup(sskd, teacher, student, SAME, steps)
        stage = sskd.init_stage(student)
        assert (stage.steps, stage.milestones, stage.lr, stage.needs_student) == (length, milestones, 0.05, False)


def test_init_learning_rates_follow_repdistiller():
    teacher, student = nets(SAME)
    lrs = {}
    for name in ("ab", "fsp", "ft"):
        method = methods.create(name)
        setup(method, teacher, student, SAME)
        lrs[name] = method.init_stage(student).lr
    assert lrs == {"ab": 0.05, "fsp": 0.05, "ft": 0.01}     # FT: 0.01 for ResNet/WRN students


# ---- schedules ------------------------------------------------------------------------------

def with_run(name, steps, **hp):
    method = methods.create(name, **hp)
    teacher, student = nets(SAME)
    setup(method, teacher, student, SAME, steps)
    return method


def test_dkd_warmup_scales_with_the_run_in_steps():
    dkd = with_run("dkd", 240)
    assert [dkd.warmup(s) for s in (1, 10, 20, 30)] == pytest.approx([1 / 20, 0.5, 1, 1])
    dkd = with_run("dkd", 8 * 32)     # the old cpu profile: 8 epochs of 32 steps; 20/240 of it is 21 steps
    assert [dkd.warmup(s) for s in (1, 21, 22)] == pytest.approx([1 / 21, 1, 1])
    assert with_run("dkd", 1).warmup(1) == 0.5   # never rounds to nothing: at least MIN_SPAN = 2 steps
    for name in ("sd-dkd", "sd-nkd", "nkd"):
        assert with_run(name, 240).warmup(10) == pytest.approx(0.5)
    assert with_run("sd-kd", 240).warmup(1) == 1                       # none in SDD's code
    assert with_run("sd-kd", 240, warmup_epochs=30).warmup(3) == pytest.approx(0.1)   # the paper's 30


def test_dkd_term_is_warmed_up():
    method, teacher, student, _ = step("dkd", SAME)
    b = batch(method)
    fs, ft = features(method, teacher, student, b)
    full = losses.dkd(fs.logits, ft.logits, b.labels)
    torch.testing.assert_close(method(b, fs, ft, 1)["dkd"], full / 20)
    torch.testing.assert_close(method(b, fs, ft, 25)["dkd"], full)


def test_edt_schedule_of_cd_code():
    edt = with_run("cd+gkd+edt", 200)         # one step per epoch: the code's epoch rules exactly
    expected = {1: (0, 0, 6.0), 59: (0, 0, 6.0), 60: (0, 0, 5.4), 61: (1, 0.1, 5.4), 159: (1, 0.1, 5.4),
                160: (1, 0.1, 4.86), 200: (1, 0.1, 4.86)}
    for step, (ce, gkd, cd) in expected.items():
        f = edt.schedule(step)
        assert (f["ce"], 0.1 * f["gkd"], 6.0 * f["cd"]) == pytest.approx((ce, gkd, cd)), step
    edt = with_run("cd+gkd+edt", 20)          # off for 6 steps; decays after 59/200 and 159/200 of the run
    assert [edt.schedule(s)["ce"] for s in (6, 7)] == [0, 1]
    assert [edt.schedule(s)["cd"] for s in (6, 7, 16, 17)] == pytest.approx([1, 0.9, 0.9, 0.81])


def test_warmups_start_below_one_in_every_profile():
    """The first step of every profile's run is warmed up (20/240 of 8 epochs once rounded to one
    epoch, a warm-up that never acted)."""
    from kdlib import profiles
    for name in profiles.list_profiles():
        p = profiles.get(name)
        n_train = p.train_size or {"fashion_mnist": 60000, "cifar100": 50000, "cifar10": 50000}.get(p.dataset) \
            or p.dataset_kwargs["train_size"]
        steps = p.epochs * -(-n_train // p.batch_size)
        for method in ("dkd", "nkd", "sd-dkd", "sd-nkd"):
            m = with_run(method, steps)
            assert m.warmup(1) < 1, (name, method)
            assert m.warmup(steps) == 1, (name, method)


def test_edt_weights_the_cd_gkd_terms():
    pair = SAME
    teacher, student = nets(pair)
    torch.manual_seed(1)
    plain = methods.create("cd+gkd")
    setup(plain, teacher, student, pair, 200)
    torch.manual_seed(1)
    edt = methods.create("cd+gkd+edt")
    setup(edt, teacher, student, pair, 200)
    b = batch(edt)
    fs, ft = features(edt, teacher, student, b)
    base = plain(b, fs, ft, 1)
    for epoch in (1, 61, 160):
        terms = edt(b, fs, ft, epoch)
        for k, factor in edt.schedule(epoch).items():
            torch.testing.assert_close(terms[k], factor * base[k])


# ---- compositions and per-pair values -------------------------------------------------------

def test_combination_is_the_sum_of_its_parts():
    method, teacher, student, terms = step("crd+kd", SAME)
    assert set(method.terms) == (set(methods.CRD.terms) | set(methods.KD.terms)) and method.terms.count("ce") == 1
    assert isinstance(method.parts["crd"], methods.CRD) and isinstance(method.parts["kd"], methods.KD)
    b = batch(method)
    fs, ft = features(method, teacher, student, b)
    terms = method(b, fs, ft, 1)
    torch.testing.assert_close(terms["kd"], losses.kd(fs.logits, ft.logits, 4.0))    # KD weight 1 in crd+kd
    torch.testing.assert_close(terms["ce"], torch.nn.functional.cross_entropy(fs.logits, b.labels))


def test_combination_hyperparameters_are_reachable():
    m = methods.create("crd+kd", ce_weight=0.5, kd__T=2.0, crd__nce_t=0.1, crd__crd_weight=0.5)
    assert (m.ce_weight, m.parts["kd"].T, m.parts["kd"].kd_weight) == (0.5, 2.0, 1.0)
    assert (m.parts["crd"].nce_t, m.parts["crd"].crd_weight, m.parts["crd"].nce_k) == (0.1, 0.5, 16384)
    assert m.config["kd__T"] == 2.0 and m.config["crd__nce_m"] == 0.5 and m.config["name"] == "crd+kd"
    w = methods.create("wttm+crd")
    assert (w.parts["wttm"].gamma, w.parts["wttm"].wttm_weight, w.parts["crd"].crd_weight) == (0.2, 4.0, 0.8)
    edt = methods.create("cd+gkd+edt", off_epochs=30, cd__teacher_train_mode=False)
    assert edt.off_epochs == 30 and not edt.teacher_train_mode


def test_for_pair_picks_up_the_papers_values():
    ttm = methods.for_pair("ttm", "resnet32x4", "resnet8x4")
    assert (ttm.gamma, ttm.ttm_weight) == (0.1, 100.0)
    assert methods.for_pair("ttm", "resnet32x4", "resnet8x4", gamma=0.3).gamma == 0.3
    wc = methods.for_pair("wttm+crd", "resnet32x4", "resnet8x4")
    assert (wc.parts["wttm"].gamma, wc.parts["wttm"].wttm_weight) == (0.2, 4.0)
    assert methods.for_pair("sd-kd", "resnet32x4", "resnet8x4").scales == (1, 2)
    sdnkd = methods.for_pair("sd-nkd", "resnet56", "resnet20")
    assert (sdnkd.base_hparams["gamma"], sdnkd.base_hparams["T"]) == (2.0, 4.0)
    assert methods.for_pair("dkd", "vgg13", "vgg8").beta == 6.0
    assert methods.for_pair("kd", "resnet56", "resnet20").config == methods.create("kd").config
    with pytest.raises(ValueError, match="unknown method"):
        methods.for_pair("ttn", "resnet32x4", "resnet8x4")


# ---- through the trainer --------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic():
    return data.load("synthetic", num_classes=K, train_size=32, test_size=16, channels=1)


def count_init_steps(method) -> list:
    """Wrap ``method.init_stage`` so that every step of its loss is recorded."""
    steps, init_stage = [], method.init_stage

    def recording(model):
        stage = init_stage(model)
        if stage is not None:
            loss = stage.loss
            stage.loss = lambda *args: steps.append(1) or loss(*args)
        return stage

    method.init_stage = recording
    return steps


@pytest.mark.parametrize("name, init_steps", [("crd+kd", 0), ("sskd", 2), ("ab", 2), ("fsp", 2), ("cd+gkd+edt", 0)])
def test_trains_through_the_trainer(name, init_steps, synthetic):
    torch.manual_seed(0)
    teacher, student = create_model("resnet20", K, 1), create_model("resnet8", K, 1)
    method = small(name, **({"crd__nce_k": 8} if name == "crd+kd" else {}))
    steps = count_init_steps(method)
    summary = distill(student, teacher, method, synthetic, RECIPES["crd"].scaled(1, batch_size=16),
                      options=Options(progress=False))
    assert len(steps) == init_steps          # 32 images in batches of 16: a 2-step run, init stages of MIN_SPAN
    assert set(summary["history"][0]["terms"]) == set(method.terms)
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["history"][0]["terms"].values())


def test_itrd_reads_the_pooled_features_which_preact_does_not_change():
    """ITRD's original asks for pre-activation features; the pooled vector it uses is the same."""
    teacher, student = nets(SAME)
    x = torch.randn(4, 1, 32, 32)
    for net in (teacher, student):
        net.eval()
        torch.testing.assert_close(net.forward_features(x, preact=True).pooled, net.forward_features(x).pooled)


def test_itrd_terms_and_per_pair_values():
    method, teacher, student, terms = step("itrd", SAME)
    b = batch(method)
    fs, ft = features(method, teacher, student, b)
    got = method(b, fs, ft, 1)
    z = method.embed(fs.pooled)
    torch.testing.assert_close(got["itrd_corr"], 2.0 * losses.itrd_correlation(z, ft.pooled, 1.5))
    torch.testing.assert_close(got["itrd_mutual"], losses.itrd_mutual(fs.pooled, ft.pooled))  # equal widths
    assert methods.for_pair("itrd", "resnet56", "resnet20").alpha == 1.01
    w = methods.for_pair("wttm+itrd", "ResNet50", "MobileNetV2")
    assert (w.parts["wttm"].gamma, w.parts["wttm"].wttm_weight, w.parts["itrd"].alpha) == (0.2, 0.02, 1.5)
