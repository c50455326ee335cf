"""The book's standard figures and widgets (chapter 0 sets the conventions).

Figures are built from run records (see :mod:`kdlib.results`): accuracy bars with error bars
over seeds, training curves, accuracy against a hyperparameter. Every interactive figure
(:func:`explore`) also draws static small multiples, because the published HTML has no
kernel to move a slider.
"""
from __future__ import annotations

import itertools
import re
from typing import Callable

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display

from . import results
from .chapter import headless


def style() -> None:
    """The book's figure style (call once per chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "figure.figsize": (7.5, 3.6),
                         "axes.titlesize": "medium"})


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run: ``label``, ``pair``, ``method``, ``seed``, ``last_acc``, ``best_acc``,
    ``best_epoch``, ``wall_time`` and ``images_per_s`` (of the group trained together),
    ``student_time`` (s) and ``student_images_per_s`` (this student's own steps), and its
    health: ``trained`` and ``diagnosis`` (:func:`kdlib.results.health`, against the vanilla
    student of the same seed where ``records`` hold it)."""
    return pd.DataFrame([{"label": r.get("label", r["config"]["method"]["name"]), "pair": r.get("pair"),
                          "method": r["config"]["method"]["name"], "seed": r["config"]["seed"],
                          "last_acc": r["last_acc"], "best_acc": r["best_acc"], "best_epoch": r["best_epoch"],
                          "wall_time": r["wall_time"], "images_per_s": r["images_per_s"],
                          "student_time": r["student_time"], "student_images_per_s": r["student_images_per_s"],
                          "trained": r["health"]["trained"], "diagnosis": r["health"]["diagnosis"]}
                         for r in results.with_health(records)])


def curves_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run and epoch: ``label``, ``pair``, ``seed``, ``epoch``, ``test_acc`` and each
    loss term as ``term:<name>``."""
    rows = []
    for r in records:
        for h in r["history"]:
            rows.append({"label": r.get("label"), "pair": r.get("pair"), "seed": r["config"]["seed"],
                         "epoch": h["epoch"], "test_acc": h["test_acc"],
                         **{f"term:{k}": v for k, v in h["terms"].items()}})
    return pd.DataFrame(rows)


def accuracy_bars(records: list[dict], metric: str = "last_acc", x: str = "label", hue: str | None = "pair",
                  ax=None, title: str | None = None, zoom: bool = True):
    """Bars of mean accuracy (%) per ``x`` with ±1 std error bars over seeds.

    ``zoom`` starts the axis near the lowest bar, so differences of a fraction of a point
    are visible (the axis label says so).
    """
    df = runs_frame(records)
    ax = ax or plt.subplots(figsize=(max(6, 0.55 * df[x].nunique() * (df[hue].nunique() if hue else 1)), 3.6))[1]
    sns.barplot(df, x=x, y=metric, hue=hue, errorbar="sd", capsize=0.15, err_kws={"linewidth": 1}, ax=ax)
    if zoom:
        lo = df.groupby([x] + ([hue] if hue else []))[metric].mean().min()
        ax.set_ylim(max(0, lo - 3), min(100, df[metric].max() + 1.5))
    ax.set_ylabel(f"{'last' if metric == 'last_acc' else 'best'}-epoch test accuracy (%)" + (" (zoomed)" if zoom else ""))
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=30)
    if title:
        ax.set_title(title)
    if hue and ax.get_legend():
        ax.legend(fontsize="small", title=None)
    return ax


def training_curves(records: list[dict], y: str = "test_acc", hue: str = "label", col: str | None = "pair",
                    title: str | None = None):
    """Test accuracy (or ``y="term:<name>"``) per epoch: mean over seeds with a ±1 std band."""
    df = curves_frame(records)
    g = sns.relplot(df, x="epoch", y=y, hue=hue, col=col, kind="line", errorbar="sd", height=3.2, aspect=1.3,
                    facet_kws={"sharey": False})
    g.set_axis_labels("epoch", "test accuracy (%)" if y == "test_acc" else y.removeprefix("term:"))
    if title:
        g.figure.suptitle(title, y=1.03)
    return g


def vs_param(records: list[dict], param: str, metric: str = "last_acc", hue: str | None = "pair", ax=None,
             title: str | None = None):
    """Accuracy (%) against a method hyperparameter (read from each record's config), mean ± std,
    one categorical position per value (numeric sweeps on a log axis: :func:`sweep`)."""
    df = runs_frame(records)
    df[param] = [str(r["config"]["method"].get(param)) if isinstance(r["config"]["method"].get(param), (list, tuple))
                 else r["config"]["method"].get(param) for r in records]
    ax = ax or plt.subplots()[1]
    sns.pointplot(df, x=param, y=metric, hue=hue, errorbar="sd", capsize=0.1, ax=ax, dodge=0.2 if hue and df[hue].nunique() > 1 else False)
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title)
    return ax


def explore(draw: Callable, sliders: dict, grid: dict, title: str | None = None, panel_size=(3.2, 2.6)):
    """An interactive figure and its static twin.

    Args:
        draw: ``draw(ax, **params)`` draws one panel.
        sliders: ``{param: ipywidgets control}`` for the live widget (JupyterLab only).
        grid: ``{param: [values]}``; the static figure has one panel per combination (one
            parameter: a row; two: a grid), drawn when the book is built.
    """
    if not headless():
        import ipywidgets as widgets

        def live(**params):
            fig, ax = plt.subplots(figsize=(6, 3.4))
            draw(ax, **params)
            plt.show()
        display(widgets.interactive(live, **sliders))
    names = list(grid)
    combos = list(itertools.product(*grid.values()))
    ncols = len(grid[names[-1]])
    nrows = len(combos) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False,
                             constrained_layout=True)
    for ax, combo in zip(axes.flat, combos):
        params = dict(zip(names, combo))
        draw(ax, **params)
        ax.set_title(", ".join(f"{k} = {v}" for k, v in params.items()), fontsize=9)
    if title:
        fig.suptitle(title)
    plt.show()


def first_design_table(first: pd.DataFrame, results_dir) -> None:
    """Show :func:`kdlib.experiments.first_design`'s runs with one column per precision and seed
    (last-epoch accuracy, %; ✗ marks a run that failed to train), or say they are not stored."""
    if first.empty:
        markdown(f"*The first design's records are not in `{results_dir}` (they are in the published cpu "
                 "profile's store, `results/`).*")
        return
    run = first.method + first.weight.map(lambda w: "" if pd.isna(w) else f" β={w:g}")
    shown = [f"{a:.2f}" + ("" if h == "trained" else " ✗") for a, h in zip(first.last_acc, first.health)]
    view = first.assign(run=run, shown=shown).pivot_table(index="run", columns=["precision", "seed"], values="shown",
                                                          aggfunc="first")
    display(view.fillna("–"))


def markdown(text: str) -> None:
    """Show Markdown (tables, math, HTML boxes) as a cell output: JupyterLab and the HTML book
    render it alike, so chapter prose that carries numbers is shown this way (:func:`prose`)."""
    display(Markdown(text))


def admonition(title: str, body: str, kind: str = "note") -> str:
    """Markdown of a titled box (``kind``: note, warning, tip) that reads in JupyterLab and in the
    HTML book: plain HTML around Markdown, which the book's theme styles as an admonition
    (MyST's ``:::{admonition}`` would show as raw markup in Lab)."""
    return (f'<div class="admonition {kind}">\n<p class="admonition-title"><strong>{title}</strong></p>\n\n'
            f"{body}\n\n</div>")


def paper_vs_code(rows: list[tuple[str, str, str]], title: str = "Paper vs code: what we follow") -> None:
    """A box listing each place where a paper and its code differ, and our choice.

    ``rows``: ``(topic, what the paper/code do, what kdlib does by default and how to get the other)``.
    """
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    markdown(admonition(title, f"| topic | paper and code | our default |\n|---|---|---|\n{table}"))


_GLUED: dict[str, str] = {}
_SLOT = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def glue(name: str, value):
    """Make ``value`` citable in this chapter's prose as ``{{name}}`` (:func:`prose`), returning it."""
    _GLUED[name] = str(value)
    return value


def prose(text: str) -> None:
    """Show a paragraph of Markdown whose ``{{name}}`` slots are the values glued so far.

    Chapters write every sentence that carries a measured number this way (in a code cell whose
    input the HTML book hides), so that it reads the same after Run All in JupyterLab and in the
    published book.

    Raises:
        KeyError: a slot names nothing glued yet (the glue cell must run before the prose).
    """
    missing = sorted({m for m in _SLOT.findall(text) if m not in _GLUED})
    if missing:
        raise KeyError(f"prose cites {', '.join(missing)}, not glued yet; glued: {', '.join(sorted(_GLUED)) or 'nothing'}")
    markdown(_SLOT.sub(lambda m: _GLUED[m.group(1)], text))


def verdicts(records: list[dict], claims, profile, title: str | None = None) -> pd.DataFrame:
    """Check ``claims`` (:class:`kdlib.chapters.Claim`) on a chapter's records with the book's one
    rule (:func:`kdlib.stats.claims`), show the table and the summary sentence with the MDE,
    and return the claims frame. Runs that failed to train are marked, never judged.

    A profile with ``verdicts=False`` (the quick teaching profile) shows our paired gaps beside
    the paper's but no verdict: its noise cannot decide them.
    """
    from . import chapters, stats
    df = stats.claims(runs_frame(records), chapters.claim_rows(claims, profile))
    view = stats.claims_view(df)
    if title:
        markdown(f"**{title}**")
    if not profile.verdicts:
        markdown(f"*The {profile.name} profile is a teaching profile and gives no verdicts: it was not designed "
                 f"for power (the MDE column says how large a gap each comparison could detect).*")
        view = view.drop(columns=["p (Holm)", "verdict"])
    display(view.style.hide())
    if profile.verdicts:
        markdown(stats.summary(df))
    return df


def bars(records: list[dict], ax, title: str, context: list[dict] = ()) -> str:
    """:func:`accuracy_bars` of the labels whose every run trained (health judged with
    ``context`` too); returns the note naming the others (show it under the figure)."""
    keep, note = results.trained_only(records, context)
    if keep:
        accuracy_bars(keep, hue=None, ax=ax, title=title)
    else:
        ax.set_title(title)
        ax.set_xticks([]); ax.set_yticks([])
        ax.text(0.5, 0.5, "no run trained\n(see the note below)", ha="center", va="center", transform=ax.transAxes)
    return note


def sweep(ax, records: list[dict], param: str, refs=(), context: list[dict] = (), log: bool = False):
    """Last-epoch accuracy against the numeric method hyperparameter ``param`` of ``records`` on a
    real (optionally log) axis: mean ± std over seeds of the settings whose every run trained,
    every trained run as a dot, every failed run as a red cross (on the axis' lower edge when
    below it), and the mean of each ``refs = [(label, colour)]`` run of ``context`` that trained.
    The trained runs set the axis, so a collapse does not squash the others. Returns the frame."""
    frame = runs_frame([*records, *context])
    f = frame.iloc[:len(records)].copy()
    f["x"] = [float(r["config"]["method"][param]) for r in records]
    complete = f.groupby("x").trained.transform("all")
    good, bad = f[f.trained], f[~f.trained]
    m = f[complete].groupby("x").last_acc.agg(["mean", "std"])
    if len(m):
        ax.errorbar(m.index, m["mean"], yerr=m["std"].fillna(0), marker="o", capsize=4, color="C0",
                    label="mean ± std over seeds")
    if len(good):
        ax.plot(good.x, good.last_acc, ".", color="C0", alpha=0.45, label="one run")
    levels = []
    pair = records[0].get("pair")
    for label, color in refs:
        ref = frame[(frame.label == label) & (frame.pair == pair)]
        if len(ref) and ref.trained.all():
            levels.append(ref.last_acc.mean())
            ax.axhline(levels[-1], color=color, ls="--", lw=1, label=f"{label} (mean)")
    values = [*good.last_acc, *levels] or list(bad.last_acc)
    lo, hi = min(values), max(values)
    pad = max(0.5, 0.15 * (hi - lo))
    lo, hi = lo - pad, hi + pad
    ax.set_ylim(lo, hi)
    if len(bad):
        below = bool((bad.last_acc < lo).any())
        ax.plot(bad.x, bad.last_acc.clip(lo, hi), "x", color="crimson", ms=9, mew=2, clip_on=False, zorder=5,
                label="failed to train" + ("\n(below the axis:\non its lower edge)" if below else ""))
    if log:
        ax.set_xscale("log")
    ticks = sorted(f.x.unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel(param)
    ax.set_ylabel("last-epoch test accuracy (%)")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return f
