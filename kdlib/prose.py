"""The book's sentences over its evidence: claims tables, sweeps and run health in words.

Every chapter states its conclusions through these functions, so that the prose is true for
any outcome and the same in every chapter (chapter 0, "How the book judges"): a verdict only
where the profile gives verdicts, "unresolved" with what would resolve it, failed runs named
with their diagnosis and never compared.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import plots, results, stats


def finite(x) -> bool:
    """A real, finite number (not NaN, not inf, not None)."""
    return isinstance(x, (int, float, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def mde_range(df: pd.DataFrame) -> str:
    """The range of the MDE over a claims table's comparisons, in words."""
    m = df.mde.astype(float)
    m = m[np.isfinite(m)]
    if not len(m):
        return "no comparison has an interval (fewer than two seeds)"
    return f"the MDE of these comparisons is {m.min():.2f} to {m.max():.2f} points"


def family_summary(df: pd.DataFrame, profile) -> str:
    """:func:`kdlib.stats.summary` where the profile gives verdicts; otherwise why it gives none."""
    if profile.verdicts:
        return stats.summary(df)
    return (f"The {profile.name} profile is a teaching profile and gives no verdicts ({mde_range(df)}); "
            f"the gaps are shown beside the paper's only.")


def row_text(r, profile) -> str:
    """One row of a :func:`kdlib.stats.claims` table in words."""
    what = f"{r.claim} on {r.pair}"
    if r.verdict == stats.FAILED:
        return f"{what} is not judged (a run failed to train)"
    if r.verdict == "not run":
        return f"{what} was not run"
    ours = f"{r['diff']:+.2f}" + (f" [{r.low:+.2f}, {r.high:+.2f}] (MDE {r.mde:.2f})" if finite(r.low)
                                  else f" (n = {int(r.n)}: no interval)")
    if r.source == "control":
        return f"{what}: ours {ours} against an expected 0 (a control)" + (f": {r.verdict}" if profile.verdicts else "")
    if not finite(r.paper_gap):
        return f"{what}: ours {ours}, no paper number"
    return f"{what}: ours {ours} against the paper's {r.paper_gap:+.2f}" + (f": {r.verdict}" if profile.verdicts else "")


def rows_text(df: pd.DataFrame, profile) -> str:
    """Every row of a claims table in words, one sentence."""
    return "; ".join(row_text(r, profile) for _, r in df.iterrows()) + "."


def to_resolve(df: pd.DataFrame, records: list[dict], profile, metric: str = "last_acc") -> str:
    """What would decide the unresolved rows of a claims table: the seeds a paired t-test needs
    to detect each paper's gap with 80 % power at the spread of its measured differences."""
    if not profile.verdicts:
        return ""
    frame = plots.runs_frame(records)
    out = []
    for r in df.itertuples():
        if r.verdict != "unresolved" or not finite(r.paper_gap) or abs(r.paper_gap) < 1e-9:
            continue
        a, b, _ = stats.seed_pairs(frame, r.a, r.b, r.pair, metric)
        sd = stats.paired(a, b).sd if len(a) else math.nan
        if not finite(sd) or sd == 0:
            out.append(f"{r.claim} on {r.pair} has {len(a)} seed(s) and no spread to plan from")
            continue
        try:
            need = f"about {stats.seeds_for(abs(r.paper_gap), sd)}"
        except ValueError:
            need = "more than 1000"
        out.append(f"{r.claim} on {r.pair} would need {need} seeds at its spread (sd of the differences "
                   f"{sd:.2f}) to detect the paper's {abs(r.paper_gap):.2f} points with {stats.MDE_POWER:.0%} power")
    if not out:
        return ""
    return ("An unresolved check has an interval that holds both zero and the paper's gap (or no interval): "
            "more seeds, or a profile with less noise, would decide it. " + "; ".join(out) + ".")


def scale_note(profile) -> str:
    """How the profile's setting differs from the papers' (true in every profile)."""
    if profile.dataset == "cifar100" and profile.epochs >= 240 and not profile.comparable:
        return "This profile trains the papers' own pairs on CIFAR-100 for the papers' 240 epochs."
    pairs = ("pairs that borrow the hyperparameters of the CIFAR-100 pairs named in the tables" if profile.comparable
             else "pairs with their own hyperparameters")
    epochs = f"{profile.epochs} epoch" + ("s" if profile.epochs != 1 else "")
    return (f"This profile ({profile.dataset}, {epochs}, {pairs}) is not the papers' setting (CIFAR-100, 240 "
            "epochs): the paper profile is where the papers' own numbers can be tested on their own ground.")


def sweep_table(records: list[dict], param: str, name: str, base: str, context: list[dict] = ()) -> pd.DataFrame:
    """One row per setting of the method hyperparameter ``param`` (shown as ``name``): accuracy
    over seeds, the paired gap to the label ``base`` (in ``records`` or ``context``) with its
    interval and MDE, and the setting's health."""
    everything = [*records, *context]
    health = results.health_by_label(everything)
    vs = stats.versus(plots.runs_frame(everything), base=base).set_index(["pair", "label"])
    rows = []
    for label in dict.fromkeys(r["label"] for r in records):
        recs = [r for r in records if r["label"] == label]
        pair, acc = recs[0]["pair"], np.array([r["last_acc"] for r in recs])
        row = {name: recs[0]["config"]["method"][param], "label": label, "n": len(acc),
               "last-epoch accuracy (%)": "– (failed)" if health[(pair, label)] != "trained" else
               f"{acc.mean():.2f}" + (f" ± {acc.std(ddof=1):.2f}" if len(acc) > 1 else "")}
        if label == base:
            gap, mde = "(the base)", "–"
        elif (pair, label) not in vs.index or not vs.loc[(pair, label), "trained"]:
            gap, mde = "– (a run failed)", "–"
        else:
            v = vs.loc[(pair, label)]
            gap = (f"{v['diff']:+.2f} [{v.low:+.2f}, {v.high:+.2f}]" if finite(v.low)
                   else f"{v['diff']:+.2f} (n = {int(v.n)}: no interval)")
            mde = f"{v.mde:.2f}" if finite(v.mde) else "–"
        rows.append({**row, f"gap to {base} [95 % CI]": gap, "MDE": mde, "health": health[(pair, label)]})
    return pd.DataFrame(rows).sort_values(name).reset_index(drop=True)


def gaps_text(table: pd.DataFrame, name: str, base: str) -> str:
    """The trained settings' gaps to ``base`` in words, from a :func:`sweep_table`."""
    col = f"gap to {base} [95 % CI]"
    ok = table[(table.health == "trained") & (table.label != base) & ~table[col].str.startswith("–")]
    if not len(ok):
        return f"no setting that trained can be compared with {base}."
    return "; ".join(f"{name} = {v:g}: {g}" + (f" (MDE {m})" if m != "–" else "")
                     for v, g, m in zip(ok[name], ok[col], ok.MDE)) + "."


def health_text(table: pd.DataFrame, name: str) -> str:
    """Which settings of a :func:`sweep_table` trained and which failed, in words."""
    good = [f"{v:g}" for v, h in zip(table[name], table.health) if h == "trained"]
    bad = [f"{name} = {v:g} ({h})" for v, h in zip(table[name], table.health) if h != "trained"]
    if not bad:
        return f"Every setting of the sweep trained ({name} = {', '.join(good)})."
    return ("Failed to train: " + "; ".join(bad) + "." +
            (f" Trained in every seed: {name} = {', '.join(good)}." if good else " No setting of the sweep trained."))


def health_count(records: list[dict]) -> str:
    """How many of the distinct runs trained, and the diagnoses of the others."""
    unique = list({r["key"]: r for r in records}.values())
    failed = [r for r in results.with_health(unique) if not r["health"]["trained"]]
    if not failed:
        return f"All {len(unique)} runs trained."
    return (f"{len(failed)} of {len(unique)} runs failed to train: "
            + "; ".join(f"{r.get('label', r['config']['method']['name'])}{' on ' + r['pair'] if r.get('pair') else ''}, "
                        f"seed {r['config']['seed']}: {r['health']['diagnosis']}" for r in failed) + ".")


def collapse_text(first) -> str:
    """Which of :func:`kdlib.experiments.first_design`'s runs failed in which precision, and
    whether that rules bf16 out (a run that fails in float32 too), as sentences."""
    if first.empty:
        return "The first design's records are not stored in this profile."
    bad = first[first.health != "trained"]
    if bad.empty:
        return "Every stored run of the first design trained."
    run = bad.method + bad.weight.map(lambda w: "" if w != w else f" β={w:g}")
    by_run = {r: sorted(set(bad.precision[run == r])) for r in dict.fromkeys(run)}
    text = "; ".join(f"{r} failed in {' and '.join(p)} ({', '.join(f'{a:.1f}%' for a in bad.last_acc[run == r])})"
                     for r, p in by_run.items())
    both = [r for r, p in by_run.items() if len(p) == 2]
    if both:
        text += (f". {', '.join(both)} {'fails' if len(both) == 1 else 'fail'} in float32 too, with the same "
                 "teacher, data, seeds and hyperparameters, so bf16 autocast is not the cause")
    return "In the first design, " + text + "."
