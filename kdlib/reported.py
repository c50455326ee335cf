"""The papers' reported numbers and per-pair hyper-parameters, as pandas DataFrames.

Two data files live in ``kdlib/tables/``:

``reported.csv``
    One row per number a paper (or its README) reports: the tables of SDD, CD, DCD, RRD,
    SSKD and TTM, and the CRD and DKD reference tables they compare against. Columns:
    ``table`` (one printed table, e.g. ``"sdd_cifar100_same_depth"``), ``paper``, ``dataset``,
    ``teacher``, ``student`` (kdlib model names where the model is in the CIFAR zoo, the
    paper's name otherwise), ``method`` (kdlib method names; ``teacher``/``student`` for the
    two networks' own accuracies, which carry the pair they belong to), ``metric`` (``top1``,
    ``top5``, ``top1_error``, ``top5_error``, in percent), ``value`` (float), ``source``
    (where the number is printed) and ``notes`` (protocol caveats: own teachers, best epoch,
    mean of n runs, numbers not checked against the paper).

``pair_hparams.csv``
    The hyper-parameters the papers give per teacher/student pair, in long format:
    ``method, teacher, student, dataset, param, value, source, notes``. ``param`` is the
    paper's name: ``M`` (SDD's pyramid scales, stored as ``"1,2,4"``), ``beta`` (DKD's and
    SD-DKD's NCKD weight; the TTM-family loss weight), ``gamma`` (TTM's power; SD-NKD's
    weight of the soft term) and ``alpha_it`` (ITRD's Renyi order).

Method names that describe an ablation setting keep it in parentheses, e.g.
``sd-kd(m=1,2)``, ``sd-kd(beta=4)`` and ``wttm(no-ce)``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

_TABLES = Path(__file__).parent / "tables"
_DATASETS = ("cifar100", "imagenet", "cub200", "stl10", "tinyimagenet")


@lru_cache(maxsize=None)
def _reported() -> pd.DataFrame:
    return pd.read_csv(_TABLES / "reported.csv", dtype={"value": float}, keep_default_na=False)


@lru_cache(maxsize=None)
def _hparams() -> pd.DataFrame:
    return pd.read_csv(_TABLES / "pair_hparams.csv", dtype=str, keep_default_na=False)


def load(paper=None, dataset=None, table=None, **filters) -> pd.DataFrame:
    """Return the reported numbers, optionally filtered, in the order the papers print them.

    Every argument filters one column of ``reported.csv`` (see the module docstring for
    the columns) and takes one value or a list of values: ``paper``, ``dataset``, ``table``
    and any other column by keyword, e.g. ``load(table="crd_cifar100_same", method=["kd",
    "crd"])``. ``load()`` returns every row. A value that the column does not contain, or an
    unknown column, raises ``ValueError`` listing the valid choices. The result is a new
    DataFrame with a fresh index.
    """
    df = _reported()
    filters = {"paper": paper, "dataset": dataset, "table": table, **filters}
    mask = pd.Series(True, index=df.index)
    for column, wanted in filters.items():
        if wanted is None:
            continue
        if column not in df.columns:
            raise ValueError(f"unknown column {column!r}; valid columns: {', '.join(df.columns)}")
        wanted = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        valid = set(df[column])
        unknown = [w for w in wanted if w not in valid]
        if unknown:
            choices = ", ".join(str(v) for v in sorted(valid, key=str))
            raise ValueError(f"unknown {column} {unknown}; valid values: {choices}")
        mask &= df[column].isin(wanted)
    return df[mask].reset_index(drop=True)


def _ordered_index(df: pd.DataFrame, columns: list[str]) -> pd.Index:
    """The distinct values of ``columns`` in order of first appearance."""
    if len(columns) == 1:
        return pd.Index(df[columns[0]].unique(), name=columns[0])
    return pd.MultiIndex.from_frame(df[columns].drop_duplicates())


def pivot(df: pd.DataFrame, index="method", metric: str | None = None) -> pd.DataFrame:
    """Shape reported rows as the paper prints them: one row per method, one column per pair.

    ``df`` is a result of :func:`load` (usually one table). Columns are ``"teacher→student"``
    strings; when the rows span several datasets or metrics, the columns become a MultiIndex
    with a ``dataset`` and/or ``metric`` level. ``metric`` keeps only that metric first.
    ``index`` is the row column (or list of columns), ``"method"`` by default; pass
    ``["table", "method"]`` to put several tables that share methods and pairs side by side.
    Rows and columns keep the order of first appearance; a cell with no number is NaN.
    Raises ``ValueError`` when two rows would fall into the same cell.
    """
    if metric is not None:
        df = df[df["metric"] == metric]
    df = df.assign(pair=df["teacher"] + "→" + df["student"])
    columns = [c for c in ("dataset", "pair", "metric") if c == "pair" or df[c].nunique() > 1]
    index = [index] if isinstance(index, str) else list(index)
    clash = df.duplicated(index + columns, keep=False)
    if clash.any():
        tables = sorted(df.loc[clash, "table"].unique())
        raise ValueError(
            f"several values for the same cell (tables {tables}); select one table, a metric, "
            "or pass index=['table', 'method']"
        )
    wide = df.pivot(index=index, columns=columns, values="value")
    return wide.reindex(index=_ordered_index(df, index), columns=_ordered_index(df, columns))


def pair_hparams(method: str, teacher: str, student: str, dataset: str = "cifar100") -> dict:
    """Return the hyper-parameters a paper gives for ``method`` on one teacher→student pair.

    Keys are the parameter names of ``pair_hparams.csv`` (``M``, ``beta``, ``gamma``,
    ``alpha_it``); ``M`` is a tuple of ints (e.g. ``(1, 2, 4)``), every other value a float.
    Returns ``{}`` when the papers give nothing for that method and pair. An unknown
    ``dataset`` raises ``ValueError`` listing the valid ones.
    """
    if dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid values: {', '.join(_DATASETS)}")
    hp = _hparams()
    rows = hp[(hp["method"] == method) & (hp["teacher"] == teacher) & (hp["student"] == student)
              & (hp["dataset"] == dataset)]
    return {
        p: tuple(int(m) for m in v.split(",")) if p == "M" else float(v)
        for p, v in zip(rows["param"], rows["value"])
    }


def tables() -> pd.DataFrame:
    """List the tables of ``reported.csv``: columns ``table``, ``paper``, ``dataset``,
    ``rows`` (number of values) and ``source`` (the distinct sources, joined by "; "),
    in file order."""
    return (
        _reported()
        .groupby("table", sort=False)
        .agg(paper=("paper", "first"), dataset=("dataset", "first"), rows=("value", "size"),
             source=("source", lambda s: "; ".join(s.unique())))
        .reset_index()
    )


def paper_gap(paper: str, a: str, b: str, pair: tuple[str, str]) -> tuple[float, str]:
    """``A − B`` (top-1 points on CIFAR-100) as ``paper`` reports it, and where it is read.

    ``a``, ``b`` are kdlib method names (``vanilla`` is the paper's student row). The pair
    ``(teacher, student)`` is looked up first, then every other pair the paper (or CRD's
    table, which supplies most papers' baselines) reports both numbers on, in file order.
    Top-1 errors count as ``100 − error``.

    Returns:
        ``(gap, "teacher→student, source")``, or ``(nan, "")`` when no table has both.
    """
    rows = _reported()
    rows = rows[(rows.dataset == "cifar100") & rows.metric.isin(["top1", "top1_error"])
                & rows.paper.isin([paper, "crd"])].copy()
    rows["acc"] = rows.value.where(rows.metric == "top1", 100 - rows.value)
    names = {m: "student" if m == "vanilla" else m for m in (a, b)}
    pairs = list(dict.fromkeys([tuple(pair), *zip(rows.teacher, rows.student)]))
    for t, s in pairs:
        # the claim's own paper first, then CRD's table (the baselines' numbers)
        cell = rows[(rows.teacher == t) & (rows.student == s)].sort_values("paper", key=lambda p: p != paper,
                                                                          kind="stable")
        cell = cell.drop_duplicates("method").set_index("method")
        if names[a] in cell.index and names[b] in cell.index:
            source = cell.loc[names[a], "source"]
            return float(cell.loc[names[a], "acc"] - cell.loc[names[b], "acc"]), f"{t}→{s}, {source}"
    return float("nan"), ""
