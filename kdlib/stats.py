"""One statistical rule for every verdict in the book (chapter 0, "how the book judges").

Two methods trained with the same seed see the same batches from the same initial weights, so
they are compared through their **paired** per-seed differences ``d_s = a_s - b_s``:

* :func:`paired`: the mean difference with its paired t-interval, the two-sided p-value and
  the minimum detectable effect (MDE) of the design: the smallest true difference a paired
  t-test at α = 0.05 finds with 80 % power, given this n and this spread of the differences.
* :func:`verdict`: what the interval says about a paper's gap: *consistent*, *contradicts*
  or *unresolved* (the interval holds both the paper's gap and zero: more seeds, or a less
  noisy profile, would decide it).
* :func:`holm`: Holm's step-down adjustment of a chapter's family of p-values.

Accuracies are in percentage points throughout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats as sps

VERDICTS = ("consistent", "contradicts", "unresolved")
MDE_ALPHA, MDE_POWER = 0.05, 0.80


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two methods over the same seeds (points, i.e. % accuracy).

    Attributes:
        diff: mean of ``a - b``.
        low, high: the paired t-interval of the mean difference at ``confidence``
            (NaN when n < 2).
        p: two-sided paired t-test p-value against a zero difference (NaN when n < 2).
        n: number of seeds.
        sd: sample standard deviation of the differences (NaN when n < 2).
        mde: minimum detectable effect at α = 0.05 and 80 % power for this n and sd (inf when
            n < 2).
        confidence: the interval's confidence level.
    """

    diff: float
    low: float
    high: float
    p: float
    n: int
    sd: float
    mde: float
    confidence: float = 0.95

    def __str__(self) -> str:
        return f"{self.diff:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired(a, b, confidence: float = 0.95) -> Paired:
    """Compare per-seed accuracies ``a`` and ``b`` (same seeds, same order), in %.

    Args:
        a, b: sequences of equal length n ≥ 1.
        confidence: level of the two-sided t-interval (0 < confidence < 1).

    Returns:
        a :class:`Paired`. With zero spread (every difference equal) the interval shrinks to
        the point, ``p`` is 0 unless the difference is 0 (then 1), and the MDE is 0.

    Raises:
        ValueError: different lengths, no values, non-finite values or a bad ``confidence``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired needs two 1-D sequences of the same non-zero length, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired got NaN or Inf accuracies; a failed run has no accuracy to compare")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    d = a - b
    n, diff = d.size, float(d.mean())
    if n < 2:
        return Paired(diff, math.nan, math.nan, math.nan, n, math.nan, math.inf, confidence)
    sd = float(d.std(ddof=1))
    if sd == 0:
        return Paired(diff, diff, diff, 1.0 if diff == 0 else 0.0, n, 0.0, 0.0, confidence)
    se = sd / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * se
    p = float(2 * sps.t.sf(abs(diff) / se, n - 1))
    return Paired(diff, diff - half, diff + half, p, n, sd, mde(n, sd), confidence)


def power(effect: float, n: int, sd: float, alpha: float = MDE_ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` when the true mean difference
    is ``effect`` (points) and the differences have standard deviation ``sd``, over n seeds
    (from the noncentral t distribution with n - 1 degrees of freedom)."""
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) * math.sqrt(n) / sd
    upper = float(sps.nct.sf(crit, df, nc))
    lower = float(sps.nct.cdf(-crit, df, nc))  # the wrong-sign tail; scipy gives NaN where it is ~0
    return upper + (lower if math.isfinite(lower) else 0.0)


def mde(n: int, sd: float, alpha: float = MDE_ALPHA, target: float = MDE_POWER) -> float:
    """Smallest true difference (points) that a two-sided paired t-test at ``alpha`` detects
    with power ``target`` over n seeds whose differences have standard deviation ``sd``.

    Returns inf for n < 2 and 0 for sd = 0.
    """
    if n < 2 or not math.isfinite(sd):
        return math.inf
    if sd == 0:
        return 0.0
    hi = sd
    while power(hi, n, sd, alpha) < target:
        hi *= 2
    return float(optimize.brentq(lambda e: power(e, n, sd, alpha) - target, 0.0, hi, xtol=1e-6 * sd))


def seeds_for(mde_target: float, sd: float, alpha: float = MDE_ALPHA, target: float = MDE_POWER,
              max_seeds: int = 1000) -> int:
    """Fewest seeds n ≥ 2 whose MDE at this ``sd`` is at most ``mde_target`` points
    (how a profile is designed from a pilot's spread)."""
    for n in range(2, max_seeds + 1):
        if mde(n, sd, alpha, target) <= mde_target:
            return n
    raise ValueError(f"more than {max_seeds} seeds needed for an MDE of {mde_target} at sd {sd}")


def verdict(cmp: Paired, paper_gap: float) -> str:
    """What our paired interval says about the paper's gap (points).

    * ``"contradicts"``: the interval excludes the paper's gap;
    * ``"unresolved"``: it holds both the paper's gap and 0 (paper_gap ≠ 0), or it does not
      exist (fewer than 2 seeds);
    * ``"consistent"``: otherwise (it holds the paper's gap and excludes 0, or the paper's
      gap is 0 and so is it).
    """
    if not math.isfinite(paper_gap):
        raise ValueError(f"verdict needs the paper's gap as a finite number, got {paper_gap!r}")
    if not (math.isfinite(cmp.low) and math.isfinite(cmp.high)):
        return "unresolved"
    if not cmp.low <= paper_gap <= cmp.high:
        return "contradicts"
    if paper_gap != 0 and cmp.low <= 0 <= cmp.high:
        return "unresolved"
    return "consistent"


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order (NaN entries stay NaN and do
    not count in the family)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# ---------------------------------------------------------------------------------------------
# The rule applied to a chapter's runs

FAILED = "failed run"  # shown instead of a verdict: a run that did not train is never compared
NO_PAPER = "no paper number"  # our interval without a gap to judge it against


def seed_pairs(runs, a: str, b: str, pair: str | None = None, metric: str = "last_acc"):
    """Per-seed values of labels ``a`` and ``b`` (on ``pair``, if given) over the seeds both
    have, as two aligned arrays, plus the diagnoses of any failed run among them.

    Args:
        runs: :func:`kdlib.plots.runs_frame` rows (``label``, ``pair``, ``seed``, ``metric``,
            ``trained``, ``diagnosis``).

    Raises:
        ValueError: a label has two runs with the same seed (a copied record would count twice).
    """
    frame = runs if pair is None else runs[runs.pair == pair]
    sides = []
    for label in (a, b):
        side = frame[frame.label == label]
        if side.seed.duplicated().any():
            raise ValueError(f"{label!r}{'' if pair is None else f' on {pair}'} has several runs of seed(s) "
                             f"{sorted(side.seed[side.seed.duplicated()])}")
        sides.append(side.set_index("seed"))
    seeds = sorted(set(sides[0].index) & set(sides[1].index))
    failed = [f"{label} seed {s}: {side.loc[s, 'diagnosis']}" for label, side in zip((a, b), sides)
              for s in seeds if not side.loc[s, "trained"]]
    return sides[0].loc[seeds, metric].to_numpy(float), sides[1].loc[seeds, metric].to_numpy(float), failed


def claims(runs, rows: list[dict], metric: str = "last_acc", confidence: float = 0.95):
    """Check a family of claims "A beats B by the paper's gap" on our paired runs.

    Args:
        runs: :func:`kdlib.plots.runs_frame` rows of the chapter (health included).
        rows: one dict per claim: ``a``, ``b`` (run labels), ``pair`` (our pair label),
            ``paper_gap`` (A − B in the paper, points; 0 for a control whose two sides should
            agree), optional ``source`` (where the paper's gap is read) and ``claim`` (text).
        metric: ``last_acc`` (the book's primary number) or ``best_acc``.

    Returns:
        a DataFrame, one row per claim: ``claim``, ``a``, ``b``, ``pair``, ``paper_gap``, ``source``,
        ``diff``, ``low``, ``high`` (our paired interval), ``mde``, ``n``, ``p``, ``p_holm``
        (Holm over the claims that have a verdict) and ``verdict`` (:data:`VERDICTS`, or
        :data:`FAILED` with the diagnosis in ``note``, or ``"not run"``).
    """
    import pandas as pd

    out = []
    for row in rows:
        a, b, pair = row["a"], row["b"], row.get("pair")
        base = {"claim": row.get("claim", f"{a} vs {b}"), "a": a, "b": b, "pair": pair, "paper_gap": row["paper_gap"],
                "source": row.get("source", "")}
        va, vb, failed = seed_pairs(runs, a, b, pair, metric)
        if failed:
            out.append({**base, "verdict": FAILED, "note": "; ".join(failed), "n": len(va)})
            continue
        if not len(va):
            out.append({**base, "verdict": "not run", "note": f"no common seeds of {a} and {b}", "n": 0})
            continue
        c = paired(va, vb, confidence)
        known = math.isfinite(row["paper_gap"])
        out.append({**base, "diff": c.diff, "low": c.low, "high": c.high, "mde": c.mde, "n": c.n, "p": c.p,
                    "verdict": verdict(c, row["paper_gap"]) if known else NO_PAPER, "note": ""})
    df = pd.DataFrame(out, columns=["claim", "a", "b", "pair", "paper_gap", "source", "diff", "low", "high", "mde", "n",
                                    "p", "verdict", "note"])
    df["p_holm"] = holm(df["p"].to_numpy(float))
    return df


def summary(df) -> str:
    """One sentence over a :func:`claims` table: how many claims got each verdict, how many
    could not be judged (failed runs), and the range of the MDE of the comparisons."""
    counts = df.verdict.value_counts()
    parts = [f"{int(counts.get(v, 0))} {v}" for v in VERDICTS]
    if counts.get(NO_PAPER, 0):
        parts.append(f"{int(counts[NO_PAPER])} without a paper number to judge against")
    if counts.get(FAILED, 0):
        parts.append(f"{int(counts[FAILED])} not judged (a run failed to train)")
    if counts.get("not run", 0):
        parts.append(f"{int(counts['not run'])} not run in this profile")
    mdes = df.mde.astype(float)
    mdes = mdes[np.isfinite(mdes)]
    tail = (f"; the smallest true gap these {len(mdes)} comparisons detect with 80 % power (MDE) is "
            f"{mdes.min():.2f} to {mdes.max():.2f} points" if len(mdes) else "")
    return f"Of {len(df)} checks: " + ", ".join(parts) + tail + "."


def claims_view(df):
    """:func:`claims` as the book shows it: human headers, our gap with its interval, the MDE,
    Holm's p, the verdict (a failed run's diagnosis in place of numbers)."""
    import pandas as pd

    def ours(r):
        if r.verdict in (FAILED, "not run"):
            return "–"
        if not math.isfinite(r.low):
            return f"{r['diff']:+.2f} (n = {int(r.n)}: no interval)"
        return f"{r['diff']:+.2f} [{r.low:+.2f}, {r.high:+.2f}]"

    return pd.DataFrame({
        "claim": df.claim, "our pair": df.pair,
        "paper gap": [("–" if not math.isfinite(g) else f"{g:+.2f}") + (f" ({s})" if s else "")
                      for g, s in zip(df.paper_gap, df.source)],
        "our gap [95 % CI]": [ours(r) for _, r in df.iterrows()],
        "MDE": [("–" if not (isinstance(m, float) and math.isfinite(m)) else f"{m:.2f}") for m in df.mde],
        "n": [int(n) for n in df.n],
        "p (Holm)": [("–" if not math.isfinite(p) else f"{p:.3f}") for p in df.p_holm.astype(float)],
        "verdict": [v if v != FAILED else f"{v}: {_first(note)}" for v, note in zip(df.verdict, df.note)],
    })


def _first(note: str) -> str:
    """The first diagnosis of a '; '-joined list, with how many more there are."""
    parts = note.split("; ")
    return parts[0] + (f" (and {len(parts) - 1} more)" if len(parts) > 1 else "")


def versus(runs, base: str = "vanilla", metric: str = "last_acc", confidence: float = 0.95):
    """Every label of every pair against ``base`` of the same pair: paired gain, interval, MDE
    and health (the benchmark's gain table and figure).

    Returns:
        a DataFrame with ``pair``, ``label``, ``diff``, ``low``, ``high``, ``mde``, ``n``,
        ``trained`` (every run of the label trained) and ``note`` (the diagnoses otherwise).
    """
    import pandas as pd

    out = []
    for (pair, label), _ in runs.groupby(["pair", "label"], sort=False):
        if label == base:
            continue
        va, vb, failed = seed_pairs(runs, label, base, pair, metric)
        c = paired(va, vb, confidence) if len(va) and not failed else None
        out.append({"pair": pair, "label": label, "trained": not failed, "note": "; ".join(failed),
                    **({"diff": c.diff, "low": c.low, "high": c.high, "mde": c.mde, "n": c.n} if c else
                       {"diff": math.nan, "low": math.nan, "high": math.nan, "mde": math.nan, "n": len(va)})})
    return pd.DataFrame(out)
