"""kdlib.prose: the book's sentences say what the claims tables and sweeps say, for any outcome."""
from __future__ import annotations

import pandas as pd
import pytest

from kdlib import profiles, prose, stats


def rec(label, seed, acc, pair="t→s", ce=0.4, **hp):
    return {"key": f"{label}{seed}", "label": label, "pair": pair, "last_acc": acc, "best_acc": acc, "best_epoch": 1,
            "num_classes": 10, "wall_time": 1.0, "images_per_s": 1.0, "student_time": 1.0, "student_images_per_s": 1.0,
            "history": [{"epoch": 1, "test_acc": acc, "terms": {"ce": ce}}],
            "config": {"method": {"name": label.split("@")[0], **hp}, "seed": seed, "teacher": {"arch": "t"},
                       "student": {"arch": "s"}, "data": {"name": "fashion_mnist"}, "recipe": {}, "profile": "cpu",
                       "amp": False}}


RECORDS = ([rec("vanilla", s, 75.0 + s) for s in range(3)] + [rec("kd", s, 75.2 + s + 0.3 * (s == 1)) for s in range(3)]
           + [rec("ttm", s, 20.0 + s) for s in range(3)])


def test_health_and_trained_only():
    from kdlib import results
    health = results.health_by_label(RECORDS)
    assert health[("t→s", "kd")] == "trained" and health[("t→s", "ttm")].startswith("failed: 3 of 3 seed(s); seed 0:")
    assert prose.health_count(RECORDS).startswith("3 of 9 runs failed to train: ttm on t→s, seed 0: 55.0 points below")
    kept, note = results.trained_only(RECORDS)
    assert {r["label"] for r in kept} == {"vanilla", "kd"} and note.startswith("*Left out (failed to train): ttm on t→s")


def test_claims_in_words_for_every_profile_kind():
    df = stats.claims(__import__("kdlib").plots.runs_frame(RECORDS),
                      [{"claim": "kd > vanilla", "a": "kd", "b": "vanilla", "pair": "t→s", "paper_gap": 1.6},
                       {"claim": "ttm > kd", "a": "ttm", "b": "kd", "pair": "t→s", "paper_gap": 1.17}])
    cpu, quick = profiles.get("cpu"), profiles.get("quick")
    words = prose.rows_text(df, cpu)
    assert "kd > vanilla on t→s: ours +0.30 [" in words and "against the paper's +1.60: contradicts" in words
    assert "ttm > kd on t→s is not judged (a run failed to train)" in words
    assert ": contradicts" not in prose.rows_text(df, quick) and "gives no verdicts" in prose.family_summary(df, quick)
    assert prose.to_resolve(df, RECORDS, cpu) == ""   # nothing unresolved here


def test_sweep_table_marks_failures():
    sweep = [rec(f"ttm@{b}", s, acc, ttm_weight=float(b)) for b, acc in ((1, 76.0), (20, 15.0)) for s in range(3)]
    table = prose.sweep_table(sweep, "ttm_weight", "β", "kd", context=RECORDS)
    assert list(table["β"]) == [1.0, 20.0] and table.health[1].startswith("failed")
    assert "β = 20 (failed" in prose.health_text(table, "β")
    assert prose.gaps_text(table, "β", "kd").startswith("β = 1: -0.30 [")  # 76 against 75.2, 76.5, 77.2
