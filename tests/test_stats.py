"""kdlib.stats: the paired interval against scipy's paired t-test, the MDE against a simulation
of the test it describes, the verdict rule's three cases, and Holm's adjustment by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kdlib import stats


def test_paired_matches_the_paired_t_test():
    a = np.array([75.1, 76.3, 74.8, 75.9, 76.0])
    b = np.array([74.2, 75.0, 74.9, 74.8, 75.1])
    c = stats.paired(a, b)
    d = a - b
    assert c.diff == pytest.approx(d.mean()) and c.sd == pytest.approx(d.std(ddof=1)) and c.n == 5
    assert c.p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (c.low, c.high) == pytest.approx((d.mean() - half, d.mean() + half))
    wide = stats.paired(a, b, confidence=0.99)
    assert wide.low < c.low and wide.high > c.high


def test_mde_has_the_power_it_claims():
    """At the MDE, a simulated paired t-test at alpha 0.05 rejects in 80 % of experiments."""
    n, sd = 5, 0.8
    effect = stats.mde(n, sd)
    rng = np.random.default_rng(0)
    d = rng.normal(effect, sd, size=(40000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    rejected = np.abs(t) > sps.t.ppf(0.975, n - 1)
    assert rejected.mean() == pytest.approx(0.80, abs=0.01)
    assert stats.power(effect, n, sd) == pytest.approx(0.80, abs=1e-6)


def test_mde_shrinks_with_seeds_and_grows_with_spread():
    assert stats.mde(3, 1.0) > stats.mde(5, 1.0) > stats.mde(10, 1.0)
    assert stats.mde(5, 2.0) == pytest.approx(2 * stats.mde(5, 1.0))
    assert stats.mde(1, 1.0) == math.inf and stats.mde(4, 0.0) == 0.0
    n = stats.seeds_for(1.0, 0.6)
    assert stats.mde(n, 0.6) <= 1.0 < stats.mde(n - 1, 0.6)


def test_degenerate_comparisons():
    one = stats.paired([75.0], [74.0])
    assert one.diff == 1.0 and math.isnan(one.low) and one.mde == math.inf
    assert stats.verdict(one, 0.5) == "unresolved"
    flat = stats.paired([76.0, 77.0], [75.0, 76.0])
    assert (flat.low, flat.high, flat.p, flat.mde) == (1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same non-zero length"):
        stats.paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN or Inf"):
        stats.paired([1.0, float("nan")], [1.0, 2.0])


def cmp(low, high):
    return stats.Paired((low + high) / 2, low, high, 0.5, 5, 1.0, 1.0)


@pytest.mark.parametrize("low, high, gap, expected", [
    (0.5, 2.0, 1.0, "consistent"),      # holds the paper's gap, excludes 0
    (0.5, 2.0, 3.0, "contradicts"),     # excludes the paper's gap (ours is smaller)
    (-2.0, -0.5, 1.0, "contradicts"),   # the other sign
    (-0.5, 2.0, 1.0, "unresolved"),     # holds both the gap and 0
    (-0.5, 0.5, 0.0, "consistent"),     # the paper says no difference, and so do we
    (0.5, 2.0, 0.0, "contradicts"),     # the paper says none, we find one
    (1.45 - 0.6, 1.45 + 0.6, 0.02, "contradicts"),  # DCD - CRD: ours +1.45, paper +0.02
])
def test_verdict_rule(low, high, gap, expected):
    assert stats.verdict(cmp(low, high), gap) == expected


def test_holm_by_hand():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    with_nan = stats.holm([0.02, float("nan"), 0.5])
    assert with_nan[0] == pytest.approx(0.04) and math.isnan(with_nan[1]) and with_nan[2] == pytest.approx(0.5)
    assert (stats.holm([0.6, 0.9]) <= 1).all()


def frame(rows):
    import pandas as pd
    return pd.DataFrame([{"label": l, "pair": "t→s", "seed": s, "last_acc": acc, "trained": ok, "diagnosis": why}
                         for l, s, acc, ok, why in rows])


def test_claims_table_marks_failures_and_corrects_the_family():
    runs = frame([("kd", s, 75 + 0.1 * s, True, "") for s in range(5)]
                 + [("dkd", s, 76.2 + 0.1 * s + (0.05 if s % 2 else -0.05), True, "") for s in range(5)]
                 + [("ttm", s, 22.0, False, "near chance") for s in range(5)])
    rows = [{"a": "dkd", "b": "kd", "pair": "t→s", "paper_gap": 1.0, "source": "Table 1"},
            {"a": "ttm", "b": "kd", "pair": "t→s", "paper_gap": 1.17},
            {"a": "kd", "b": "kd", "pair": "t→s", "paper_gap": 0.0, "claim": "control"}]
    df = stats.claims(runs, rows)
    assert list(df.verdict) == ["contradicts", stats.FAILED, "consistent"]  # +1.2 ± tiny excludes 1.0
    assert df.loc[1, "note"].startswith("ttm seed 0: near chance") and math.isnan(df.loc[1, "p"])
    assert df.loc[0, "p_holm"] == pytest.approx(min(1, 2 * df.loc[0, "p"]))  # the failed claim is not in the family
    view = stats.claims_view(df)
    assert view.loc[1, "our gap [95 % CI]"] == "–" and view.loc[1, "verdict"].startswith("failed run: ttm seed 0")


def test_duplicated_seeds_are_refused():
    runs = frame([("kd", 0, 75.0, True, ""), ("kd", 0, 75.0, True, ""), ("dkd", 0, 76.0, True, "")])
    with pytest.raises(ValueError, match="'kd' on t→s has several runs of seed"):
        stats.claims(runs, [{"a": "dkd", "b": "kd", "pair": "t→s", "paper_gap": 1.0}])


def test_versus_base():
    runs = frame([("vanilla", s, 70.0 + s, True, "") for s in range(3)]
                 + [("kd", s, 71.0 + s + 0.1 * (s == 1), True, "") for s in range(3)]
                 + [("ab", s, 50.0, False, "below vanilla") for s in range(3)])
    v = stats.versus(runs).set_index("label")
    assert v.loc["kd", "diff"] == pytest.approx(1 + 0.1 / 3) and v.loc["kd", "trained"]
    assert not v.loc["ab", "trained"] and math.isnan(v.loc["ab", "diff"])


def test_summary_sentence_counts_verdicts():
    runs = frame([("kd", s, 75 + 0.3 * s, True, "") for s in range(4)]
                 + [("dkd", s, 75.5 + 0.3 * s + 0.2 * (s % 2), True, "") for s in range(4)])
    df = stats.claims(runs, [{"a": "dkd", "b": "kd", "pair": "t→s", "paper_gap": 0.5},
                             {"a": "dkd", "b": "kd", "pair": "t→s", "paper_gap": float("nan")}])
    assert list(df.verdict) == ["consistent", stats.NO_PAPER]
    text = stats.summary(df)
    assert text.startswith("Of 2 checks: 1 consistent, 0 contradicts, 0 unresolved") and "MDE" in text
