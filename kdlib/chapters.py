"""What each chapter runs and claims, as data: the chapters and the benchmark (chapter 6) read it.

Every chapter trains a main table on the profile's two pairs (``profile.pairs[0]`` is the
same-family pair, ``pairs[1]`` the cross-family one) and checks its paper's headline claims
on it with one rule (:func:`kdlib.stats.claims`), then the controls its derivation calls for
(ablations, sweeps, a method against its base at matched settings). A run is a label and a
spec ``{"method": name, **hyperparameters}``; the same label means the same run in every
chapter. ``python -m kdlib runs`` trains all of them (:func:`book_runs`), seed by seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .profiles import Profile
from .reported import paper_gap


def specs(names) -> dict[str, dict]:
    """``{name: {"method": name}}``: runs of methods at their defaults (per pair: the papers')."""
    return {m: {"method": m} for m in names}


def sdd_specs(scales: tuple[int, ...]) -> dict[str, dict]:
    """SDD's three losses with the pyramid ``scales`` the paper uses for such a pair."""
    return {m: {"method": m, "scales": scales} for m in ("sd-kd", "sd-dkd", "sd-nkd")}


@dataclass(frozen=True)
class Claim:
    """A paper's claim that run ``a`` beats run ``b``, with the gap the paper reports.

    Attributes:
        a, b: run labels.
        paper: whose tables give the gap (``kdlib.reported`` paper names).
        gap: a fixed expected gap instead (a control: 0.0 when both sides are the same loss).
        pairs: which of the profile's pairs it is checked on (0 same family, 1 cross family).
        reported: the paper's names of ``a`` and ``b`` where they are not kdlib's method names
            (an ablation's rows, e.g. ``("sd-kd(m=1,2)", "sd-kd(m=1)")``).
    """

    a: str
    b: str
    paper: str
    gap: float | None = None
    pairs: tuple[int, ...] = (0, 1)
    reported: tuple[str, str] | None = None

    def text(self) -> str:
        return f"{self.a} = {self.b}" if self.gap == 0 else f"{self.a} > {self.b}"


def no_controls(profile: Profile, index: int) -> dict[str, dict]:
    return {}


@dataclass(frozen=True)
class ChapterRuns:
    """One chapter's main table (``same``, ``cross``: label → spec per pair), its claims, and its
    controls: ``controls(profile, index)`` gives the control runs of the profile's pair ``index``
    (their hyperparameters may follow the profile, e.g. its CRD negatives, or the CIFAR-100 pair
    the pair borrows from), and ``control_claims`` what they are checked for."""

    title: str
    same: dict[str, dict]
    cross: dict[str, dict]
    claims: tuple[Claim, ...] = field(default=())
    controls: Callable[[Profile, int], dict[str, dict]] = no_controls
    control_claims: tuple[Claim, ...] = field(default=())

    def runs(self, index: int) -> dict[str, dict]:
        """The main-table runs of the profile's pair ``index`` (0 same family, 1 cross family)."""
        return (self.same, self.cross)[index]

    def control_runs(self, profile: Profile, index: int) -> dict[str, dict]:
        """The control runs of ``profile``'s pair ``index``."""
        return self.controls(profile, index)


BASELINES = ["vanilla", "kd", "dkd", "fitnet", "at", "crd"]
SDD_BASES = ["vanilla", "kd", "dkd", "nkd"]
CD_RUNS = ["vanilla", "kd", "cd", "cd+gkd", "cd+gkd+edt"]
CH3_SAME = ["vanilla", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst",
            "crd", "crd+kd", "dcd", "dcd+kd", "rrd", "rrd+kd"]
CH3_CROSS = ["vanilla", "kd", "crd", "crd+kd", "dcd", "dcd+kd", "rrd", "rrd+kd"]
SSKD_RUNS = ["vanilla", "kd", "crd", "sskd"]
TTM_RUNS = ["vanilla", "kd", "dkd", "dist", "ttm", "wttm", "wttm+crd", "itrd", "wttm+itrd"]



def sdd_controls(profile, index):
    """Section 1.4: SD-X at M=(1,) (the global logits only) isolates the multi-scale terms; without
    SDD's gradient clipping SD-KD at M=(1,) is plain KD (a control whose gap must be 0)."""
    if index:
        return {}
    return {"sd-kd M=(1,)": {"method": "sd-kd", "scales": (1,)},
            "sd-kd M=(1,) no clip": {"method": "sd-kd", "scales": (1,), "grad_clip": None},
            "sd-kd M=(1,2,4)": {"method": "sd-kd", "scales": (1, 2, 4)},
            "sd-dkd M=(1,)": {"method": "sd-dkd", "scales": (1,)},
            "sd-nkd M=(1,)": {"method": "sd-nkd", "scales": (1,)}}


def cd_controls(profile, index):
    """Section 2.4: EDT's parts one at a time (no off phase, no decay) and CD with the usual
    eval-mode teacher instead of the code's train-mode BatchNorm."""
    if index:
        return {}
    return {"edt w/o off phase": {"method": "cd+gkd+edt", "off_epochs": 0},
            "edt w/o decay": {"method": "cd+gkd+edt", "cd_decay": 1.0},
            "cd teacher eval": {"method": "cd", "teacher_train_mode": False}}


def dcd_controls(profile, index):
    """Section 3.5: DCD without its consistency term (alpha = 0), and CRD with a quarter and a
    sixteenth of the profile's negatives K."""
    if index:
        return {}
    k = profile.nce_k or 16384
    return {"dcd alpha=0": {"method": "dcd", "alpha": 0.0},
            "crd K/4": {"method": "crd", "nce_k": max(1, k // 4)},
            "crd K/16": {"method": "crd", "nce_k": max(1, k // 16)}}


def sskd_controls(profile, index):
    """Section 4.4: SSKD without each of its terms and over the share of SS rows kept."""
    if index:
        return {}
    return {"sskd w/o KD": {"method": "sskd", "kd_weight": 0.0},
            "sskd w/o TF": {"method": "sskd", "tf_weight": 0.0},
            "sskd w/o SS": {"method": "sskd", "ss_weight": 0.0},
            "ratio_ss=0.5": {"method": "sskd", "ratio_ss": 0.5},
            "ratio_ss=1.0": {"method": "sskd", "ratio_ss": 1.0}}


TTM_GAMMAS = (0.1, 0.2, 0.5)
TTM_BETAS = (1, 3, 7)


def ttm_controls(profile, index):
    """Section 5.3: on the same-family pair a sweep of TTM's gamma and KD at T = 1/gamma with the
    same weight on its gradient (KD's term kd_weight·T²·KL at temperature T pulls the logits with
    kd_weight·T, TTM's beta·KL with beta, so kd_weight = beta·gamma); on the cross-family pair a
    sweep of beta."""
    from .methods import for_pair
    if index:
        return {f"beta={b}": {"method": "ttm", "ttm_weight": b} for b in TTM_BETAS}
    ttm = for_pair("ttm", *profile.paper_pair(profile.pairs[0]))
    return {**{f"gamma={g}": {"method": "ttm", "gamma": g} for g in TTM_GAMMAS},
            "kd T=1/γ": {"method": "kd", "T": 1 / ttm.gamma, "kd_weight": ttm.ttm_weight * ttm.gamma,
                         "ce_weight": ttm.ce_weight}}


CHAPTERS = {
    "00_foundations": ChapterRuns(
        "Foundations", specs(BASELINES), specs(BASELINES),
        (Claim("kd", "vanilla", "crd"), Claim("dkd", "kd", "dkd"), Claim("crd", "kd", "crd"))),
    "01_sdd": ChapterRuns(
        "SDD", {**specs(SDD_BASES), **sdd_specs((1, 2))}, {**specs(SDD_BASES), **sdd_specs((1, 2, 4))},
        (Claim("sd-kd", "kd", "sdd"), Claim("sd-dkd", "dkd", "sdd"), Claim("sd-nkd", "nkd", "sdd")),
        sdd_controls,
        (Claim("sd-kd M=(1,) no clip", "kd", "sdd", gap=0.0, pairs=(0,)),
         Claim("sd-kd", "sd-kd M=(1,)", "sdd", pairs=(0,), reported=("sd-kd(m=1,2)", "sd-kd(m=1)")),
         Claim("sd-dkd", "sd-dkd M=(1,)", "sdd", pairs=(0,)),
         Claim("sd-nkd", "sd-nkd M=(1,)", "sdd", pairs=(0,)))),
    "02_cd": ChapterRuns(
        "CD", specs(CD_RUNS), specs(CD_RUNS),
        (Claim("cd", "kd", "cd"), Claim("cd+gkd", "cd", "cd"), Claim("cd+gkd+edt", "cd+gkd", "cd")),
        cd_controls,
        (Claim("cd+gkd+edt", "edt w/o off phase", "cd", pairs=(0,)), Claim("cd+gkd+edt", "edt w/o decay", "cd", pairs=(0,)),
         Claim("cd", "cd teacher eval", "cd", pairs=(0,)))),
    "03_dcd_rrd": ChapterRuns(
        "DCD and RRD", specs(CH3_SAME), specs(CH3_CROSS),
        (Claim("dcd", "crd", "dcd"), Claim("dcd+kd", "crd+kd", "dcd"), Claim("rrd", "crd", "rrd"),
         Claim("rrd+kd", "crd+kd", "rrd"), Claim("dcd+kd", "dcd", "dcd"), Claim("rrd+kd", "rrd", "rrd")),
        dcd_controls,
        (Claim("dcd", "dcd alpha=0", "dcd", pairs=(0,)), Claim("crd", "crd K/4", "crd", pairs=(0,)),
         Claim("crd", "crd K/16", "crd", pairs=(0,)))),
    "04_sskd": ChapterRuns(
        "SSKD", specs(SSKD_RUNS), specs(SSKD_RUNS),
        (Claim("sskd", "kd", "sskd"), Claim("sskd", "crd", "sskd")),
        sskd_controls,
        (Claim("sskd", "sskd w/o KD", "sskd", pairs=(0,)), Claim("sskd", "sskd w/o TF", "sskd", pairs=(0,)),
         Claim("sskd", "sskd w/o SS", "sskd", pairs=(0,)), Claim("sskd", "ratio_ss=0.5", "sskd", pairs=(0,)),
         Claim("sskd", "ratio_ss=1.0", "sskd", pairs=(0,)))),
    "05_ttm": ChapterRuns(
        "TTM and WTTM", specs(TTM_RUNS), specs(TTM_RUNS),
        (Claim("ttm", "kd", "ttm"), Claim("wttm", "ttm", "ttm"), Claim("wttm+crd", "wttm", "ttm"),
         Claim("wttm+itrd", "wttm", "ttm"), Claim("wttm+itrd", "itrd", "ttm")),
        ttm_controls,
        (Claim("ttm", "kd T=1/γ", "ttm", pairs=(0,)),)),
}


def claim_rows(claims, profile: Profile) -> list[dict]:
    """Rows for :func:`kdlib.stats.claims`: each claim on each of its pairs of ``profile``, with
    the paper's gap read on the CIFAR-100 pair whose hyperparameters our pair borrows."""
    rows = []
    for c in claims:
        for i in c.pairs:
            pair = profile.pairs[i]
            if c.gap is None:
                gap, source = paper_gap(c.paper, *(c.reported or (c.a, c.b)), profile.paper_pair(pair))
            else:
                gap, source = c.gap, "control"
            rows.append({"claim": c.text(), "a": c.a, "b": c.b, "pair": "→".join(pair), "paper_gap": gap,
                         "source": source})
    return rows


def book_runs(profile: Profile | None = None) -> dict[tuple[int, str], tuple[str, dict]]:
    """Every main-table run of the book, and with a ``profile`` every control run too:
    ``(pair index, label) -> (first chapter, spec)``, in the book's order.

    Raises:
        ValueError: two chapters run the same label with different settings.
    """
    out: dict[tuple[int, str], tuple[str, dict]] = {}
    for name, chapter in CHAPTERS.items():
        for index in (0, 1):
            runs = {**chapter.runs(index), **(chapter.control_runs(profile, index) if profile else {})}
            for label, spec in runs.items():
                first, known = out.setdefault((index, label), (name, spec))
                if known != spec:
                    raise ValueError(f"{label} on pair {index}: chapters {first} and {name} run different settings")
    return out
