"""What each chapter runs and claims, as data: the chapters and the benchmark (chapter 6) read it.

Every chapter trains a main table on the profile's two pairs (``profile.pairs[0]`` is the
same-family pair, ``pairs[1]`` the cross-family one) and checks its paper's headline claims
on it with one rule (:func:`kdlib.stats.claims`). A run is a label and a spec
``{"method": name, **hyperparameters}``; the same label means the same run in every chapter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    """

    a: str
    b: str
    paper: str
    gap: float | None = None
    pairs: tuple[int, ...] = (0, 1)

    def text(self) -> str:
        return f"{self.a} = {self.b}" if self.gap == 0 else f"{self.a} > {self.b}"


@dataclass(frozen=True)
class ChapterRuns:
    """One chapter's main table (``same``, ``cross``: label → spec per pair) and its claims."""

    title: str
    same: dict[str, dict]
    cross: dict[str, dict]
    claims: tuple[Claim, ...] = field(default=())

    def runs(self, index: int) -> dict[str, dict]:
        """The runs of the profile's pair ``index`` (0 same family, 1 cross family)."""
        return (self.same, self.cross)[index]


BASELINES = ["vanilla", "kd", "dkd", "fitnet", "at", "crd"]
SDD_BASES = ["vanilla", "kd", "dkd", "nkd"]
CD_RUNS = ["vanilla", "kd", "cd", "cd+gkd", "cd+gkd+edt"]
CH3_SAME = ["vanilla", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst",
            "crd", "crd+kd", "dcd", "dcd+kd", "rrd", "rrd+kd"]
CH3_CROSS = ["vanilla", "kd", "crd", "crd+kd", "dcd", "dcd+kd", "rrd", "rrd+kd"]
SSKD_RUNS = ["vanilla", "kd", "crd", "sskd"]
TTM_RUNS = ["vanilla", "kd", "dkd", "dist", "ttm", "wttm", "wttm+crd", "itrd", "wttm+itrd"]

CHAPTERS = {
    "00_foundations": ChapterRuns(
        "Foundations", specs(BASELINES), specs(BASELINES),
        (Claim("kd", "vanilla", "crd"), Claim("dkd", "kd", "dkd"), Claim("crd", "kd", "crd"))),
    "01_sdd": ChapterRuns(
        "SDD", {**specs(SDD_BASES), **sdd_specs((1, 2))}, {**specs(SDD_BASES), **sdd_specs((1, 2, 4))},
        (Claim("sd-kd", "kd", "sdd"), Claim("sd-dkd", "dkd", "sdd"), Claim("sd-nkd", "nkd", "sdd"))),
    "02_cd": ChapterRuns(
        "CD", specs(CD_RUNS), specs(CD_RUNS),
        (Claim("cd", "kd", "cd"), Claim("cd+gkd", "cd", "cd"), Claim("cd+gkd+edt", "cd+gkd", "cd"))),
    "03_dcd_rrd": ChapterRuns(
        "DCD and RRD", specs(CH3_SAME), specs(CH3_CROSS),
        (Claim("dcd", "crd", "dcd"), Claim("dcd+kd", "crd+kd", "dcd"), Claim("rrd", "crd", "rrd"),
         Claim("rrd+kd", "crd+kd", "rrd"), Claim("dcd+kd", "dcd", "dcd"), Claim("rrd+kd", "rrd", "rrd"))),
    "04_sskd": ChapterRuns(
        "SSKD", specs(SSKD_RUNS), specs(SSKD_RUNS),
        (Claim("sskd", "kd", "sskd"), Claim("sskd", "crd", "sskd"))),
    "05_ttm": ChapterRuns(
        "TTM and WTTM", specs(TTM_RUNS), specs(TTM_RUNS),
        (Claim("ttm", "kd", "ttm"), Claim("wttm", "ttm", "ttm"), Claim("wttm+crd", "wttm", "ttm"),
         Claim("wttm+itrd", "wttm", "ttm"), Claim("wttm+itrd", "itrd", "ttm"))),
}


def claim_rows(claims, profile: Profile) -> list[dict]:
    """Rows for :func:`kdlib.stats.claims`: each claim on each of its pairs of ``profile``, with
    the paper's gap read on the CIFAR-100 pair whose hyperparameters our pair borrows."""
    rows = []
    for c in claims:
        for i in c.pairs:
            pair = profile.pairs[i]
            if c.gap is None:
                gap, source = paper_gap(c.paper, c.a, c.b, profile.paper_pair(pair))
            else:
                gap, source = c.gap, "control"
            rows.append({"claim": c.text(), "a": c.a, "b": c.b, "pair": "→".join(pair), "paper_gap": gap,
                         "source": source})
    return rows


def book_runs() -> dict[tuple[int, str], tuple[str, dict]]:
    """Every main-table run of the book: ``(pair index, label) -> (first chapter, spec)``.

    Raises:
        ValueError: two chapters run the same label with different settings.
    """
    out: dict[tuple[int, str], tuple[str, dict]] = {}
    for name, chapter in CHAPTERS.items():
        for index in (0, 1):
            for label, spec in chapter.runs(index).items():
                first, known = out.setdefault((index, label), (name, spec))
                if known != spec:
                    raise ValueError(f"{label} on pair {index}: chapters {first} and {name} run different settings")
    return out
