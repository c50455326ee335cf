"""The results store: one JSON record per run, train-or-load, and tables over seeds.

A record is keyed by the hash of its fully resolved config (method and hyperparameters,
models, dataset and subset, recipe, seed, profile, teacher checkpoint hash), so asking
again for the same run loads it instead of training. Records are written atomically
(temp file + rename): concurrent writers never leave a torn file. Every table and number in
the book is computed from these records (chapter 0, "the protocol").
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from .io import atomic_write_json, decode_ints

DEFAULT_DIR = Path("results")


def config_key(config: dict) -> str:
    """16 hex digits of the SHA-256 of the config's canonical JSON (sorted keys)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def environment() -> dict:
    """Versions and machine facts stored with every record."""
    return {"kdlib_commit": _git_commit(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu_threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Store:
    """A folder of run records, ``<root>/<key>.json``.

    Args:
        root: the folder (created on first write); the book uses ``results/`` at the top level.
    """

    def __init__(self, root: str | Path = DEFAULT_DIR):
        if not str(root).strip():
            raise ValueError("results_dir is empty; expected a folder path such as 'results'")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"results_dir {str(self.root)!r} is a file; expected a folder (created if missing)")

    def path(self, config: dict) -> Path:
        return self.root / f"{config_key(config)}.json"

    def get(self, config: dict) -> dict | None:
        """The record of this exact config, or ``None``.

        Raises:
            RecordError: the stored file is unreadable or not a valid record of this config.
        """
        path = self.path(config)
        if not path.is_file():
            return None
        return read_record(path)

    def put(self, config: dict, summary: dict, device: str) -> dict:
        """Write the record of a finished run (atomically) and return it.

        Args:
            config: the resolved config (what was run).
            summary: the trainer's summary (history, last/best accuracy, timing, predictions).
            device: where it ran.

        The record gets its own :func:`health` (the checks that need no other run).
        """
        record = {"key": config_key(config), "config": config, **summary, "device": device,
                  "env": environment(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if "last_acc" in record:  # a training run (cost measurements are records too)
            record["health"] = health(record)
        atomic_write_json(self.path(config), record)
        return record

    def records(self, **match) -> list[dict]:
        """All records whose config has the given values (dotted keys reach inside:
        ``teacher.arch="resnet20"``). Only files named ``<key>.json`` are records (a copy
        under another name is not counted twice); each is validated as it is read.

        Raises:
            RecordError: a record file is damaged (named in the message).
        """
        out = []
        for path in sorted(self.root.glob("*.json")):
            if not KEY_NAME.fullmatch(path.stem):
                continue
            rec = read_record(path)
            if all(_get(rec["config"], k) == v for k, v in match.items()):
                out.append(rec)
        return out


KEY_NAME = re.compile(r"[0-9a-f]{16}")


class RecordError(ValueError):
    """A stored record is unreadable or inconsistent (the message names the file and the fault)."""


def read_record(path: str | Path) -> dict:
    """Read and check one record file: valid JSON, the shape of a record, a key that matches
    both its file name and its config, accuracies that are numbers in [0, 100], a seed that is
    an int, a history whose last accuracy is the recorded one.

    Raises:
        RecordError: naming ``path`` and what is wrong (the file is left as it is).
    """
    path = Path(path)

    def bad(why: str):
        raise RecordError(f"record {str(path)!r} is damaged: {why}")

    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        bad(f"unreadable ({type(e).__name__}: {e})")
    if not isinstance(rec, dict) or not isinstance(rec.get("config"), dict) or not isinstance(rec.get("key"), str):
        bad("not a record (expected a JSON object with 'key' and 'config')")
    if rec["key"] != path.stem:
        bad(f"its key {rec['key']!r} is not its file name")
    if config_key(rec["config"]) != rec["key"]:
        bad("its config does not hash to its key (edited by hand?)")
    seed = rec["config"].get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        bad(f"its seed {seed!r} is not an int")
    if "last_acc" in rec:
        for field in ("last_acc", "best_acc"):
            v = rec.get(field)
            if not _is_accuracy(v):
                bad(f"{field} is {v!r}; expected a percentage in [0, 100]")
        history = rec.get("history")
        if not isinstance(history, list) or not history or not all(
                isinstance(h, dict) and _is_accuracy(h.get("test_acc")) for h in history):
            bad("its history is not a non-empty list of epochs with accuracies in [0, 100]")
        if history[-1]["test_acc"] != rec["last_acc"]:
            bad("last_acc is not the last epoch's accuracy")
    return rec


def _is_accuracy(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 100


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# ---------------------------------------------------------------------------------------------
# What a record says about itself

BELOW_VANILLA = 5.0   # points below the same seed's vanilla student at which a run counts as failed
NEAR_CHANCE = 2.0     # a last accuracy under this multiple of chance (100/K %) never learned
STUCK_CE = 0.95       # a last-epoch cross-entropy above this fraction of ln K never left the uniform guess

_CLASSES = {"fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


def num_classes(record: dict) -> int | None:
    """K of the record's dataset (stored in records since predictions were added; derived from
    the data config for older ones), or ``None`` when the record does not say."""
    if "num_classes" in record:
        return int(record["num_classes"])
    data = record.get("config", {}).get("data") or {}
    return int(data["num_classes"]) if "num_classes" in data else _CLASSES.get(data.get("name"))


def health(record: dict, vanilla: dict | None = None) -> dict:
    """Whether a run trained, and if not, why (chapter 0, "how the book judges").

    A run failed when its last accuracy is not finite, is under ``NEAR_CHANCE`` × chance,
    its last-epoch cross-entropy (divided by its weight) stays above ``STUCK_CE``·ln K, or,
    given the vanilla student of the same pair and seed, it ends more than
    ``BELOW_VANILLA`` points below it. Failed runs are shown with their diagnosis and never
    enter orderings, ranks, fronts or verdicts.

    Args:
        record: a student (or teacher) run record.
        vanilla: the record of the vanilla student with the same pair, data and seed, if any.

    Returns:
        ``{"trained": bool, "diagnosis": str}`` (an empty diagnosis for a healthy run).
    """
    k = num_classes(record)
    acc = record["last_acc"]
    why = []
    if not math.isfinite(acc):
        why.append(f"last accuracy is {acc}")
    elif k and acc < NEAR_CHANCE * 100.0 / k:
        why.append(f"near chance: {acc:.1f}% (chance {100.0 / k:.0f}%)")
    method = record.get("config", {}).get("method")
    weight = method.get("ce_weight", 1.0) if isinstance(method, dict) else 1.0
    ce = record["history"][-1].get("terms", {}).get("ce") if record.get("history") else None
    if k and ce is not None and weight and ce / weight > STUCK_CE * math.log(k):
        why.append(f"cross-entropy stuck at {ce / weight:.2f} ≈ ln {k} = {math.log(k):.2f}")
    if vanilla is not None and vanilla is not record and math.isfinite(acc) \
            and acc < vanilla["last_acc"] - BELOW_VANILLA:
        why.append(f"{vanilla['last_acc'] - acc:.1f} points below the vanilla student of its seed "
                   f"({vanilla['last_acc']:.1f}%)")
    return {"trained": not why, "diagnosis": "; ".join(why)}


def with_health(records: list[dict]) -> list[dict]:
    """Copies of ``records`` with ``health`` set from all checks, the vanilla student of the
    same teacher, student, data, recipe and seed being looked up among ``records``."""
    def context(r):
        c = r["config"]
        return json.dumps([c.get("teacher"), c.get("student"), c.get("data"), c.get("recipe"), c.get("seed"),
                           c.get("profile"), c.get("amp")], sort_keys=True, default=str)

    vanillas = {context(r): r for r in records if r["config"]["method"]["name"] == "vanilla"}
    return [{**r, "health": health(r, vanillas.get(context(r)))} for r in records]


def _label(r: dict) -> tuple:
    return r.get("pair"), r.get("label", r["config"]["method"]["name"])


def health_by_label(records: list[dict]) -> dict[tuple, str]:
    """``(pair, label) -> "trained"`` or ``"failed: k of n seed(s); seed s: <diagnosis>"`` for every
    label of ``records`` (each run judged against the vanilla student of its seed among them)."""
    groups: dict[tuple, list[dict]] = {}
    for r in with_health(records):
        groups.setdefault(_label(r), []).append(r)
    out = {}
    for key, runs in groups.items():
        bad = [r for r in runs if not r["health"]["trained"]]
        others = ", ".join(str(r["config"]["seed"]) for r in bad[1:])
        out[key] = "trained" if not bad else (
            f"failed: {len(bad)} of {len(runs)} seed(s); seed {bad[0]['config']['seed']}: {bad[0]['health']['diagnosis']}"
            + (f"; seed(s) {others} failed too" if others else ""))
    return out


def trained_only(records: list[dict], context: list[dict] = ()) -> tuple[list[dict], str]:
    """The records of the labels whose every run trained (health judged with the vanilla runs of
    ``context`` too), and a Markdown note naming the others with their diagnoses ("" if none)."""
    health = health_by_label([*records, *context])
    keep = [r for r in records if health[_label(r)] == "trained"]
    failed = dict.fromkeys(_label(r) for r in records if health[_label(r)] != "trained")
    note = ("*Left out (failed to train): " + "; ".join(f"{label}{' on ' + pair if pair else ''}, {health[(pair, label)]}"
                                                       for pair, label in failed) + ".*") if failed else ""
    return keep, note


def predictions(record: dict) -> np.ndarray:
    """The predicted class of every test image at the last epoch, int64 ``(N,)`` in the test
    split's order (records written before predictions were stored raise ``KeyError``)."""
    if record.get("predictions") is None:
        raise KeyError(f"record {record.get('key')} holds no predictions (recorded before they were stored)")
    return decode_ints(record["predictions"])


# ---------------------------------------------------------------------------------------------
# Train or load, and tables

def train_or_load(configs: list[dict], train: Callable[[list[dict]], list[dict]], store: Store,
                  force: bool = False) -> list[dict]:
    """Records for ``configs``: stored ones are loaded, the rest trained together.

    Args:
        configs: resolved run configs.
        train: trains the given configs (in one group, e.g. ``distill_many``) and returns one
            trainer summary per config, in order, each with a ``device`` entry.
        store: where records live.
        force: retrain even when a record exists.

    Returns:
        one record per config, in order.
    """
    records = [None if force else store.get(c) for c in configs]
    missing = [c for c, r in zip(configs, records) if r is None]
    if missing:
        fresh = iter(store.put(c, s, s.pop("device")) for c, s in zip(missing, train(missing)))
        records = [r if r is not None else next(fresh) for r in records]
    return records


def table(records: Iterable[dict], by: list[str], metrics=("last_acc", "best_acc")) -> pd.DataFrame:
    """Mean, std and n over seeds of each metric, grouped by config fields.

    Args:
        records: run records.
        by: dotted config keys to group by, e.g. ``["method.name", "student.arch"]``.
        metrics: record fields to aggregate (accuracies in %).

    Returns:
        one row per group with ``<metric>_mean``, ``<metric>_std`` (sample std; NaN for n=1)
        and ``n``.
    """
    rows = [{**{k: _get(r["config"], k) for k in by}, **{m: r[m] for m in metrics}} for r in records]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=[*by, *(f"{m}_{s}" for m in metrics for s in ("mean", "std")), "n"])
    g = df.groupby(by, sort=False)
    out = g[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n"] = g.size()
    return out.reset_index()


def mean_std(df: pd.DataFrame, metric: str = "last_acc", digits: int = 2) -> pd.Series:
    """Format ``<metric>_mean ± <metric>_std`` as text (``± –`` where n = 1)."""
    def fmt(row):
        std = row[f"{metric}_std"]
        return f"{row[f'{metric}_mean']:.{digits}f} ± " + ("–" if pd.isna(std) else f"{std:.{digits}f}")
    return df.apply(fmt, axis=1)


def ours_vs_paper(records: list[dict], paper: pd.DataFrame, by: str = "label") -> pd.DataFrame:
    """Our measured table beside a paper's, method by method.

    Datasets and pairs usually differ (Fashion-MNIST vs CIFAR-100), so besides the raw
    numbers each side shows its **gain over its own vanilla student**, the quantity that can be
    compared across settings.

    Args:
        records: our runs of one pair (``label`` per method; a ``vanilla`` run gives our baseline).
        paper: rows of :func:`kdlib.reported.load` for one teacher→student pair (``method``,
            ``value``; a ``student`` row gives the paper's baseline).
        by: the record field naming a row (``label``; methods without a paper number keep "–").

    Returns:
        columns ``method``, ``paper top-1``, ``paper gain``, ``ours last``, ``ours best``
        (mean ± std over seeds, %), ``n``, ``our gain`` (last-epoch mean minus vanilla's; a
        method with a run that failed to train shows ``failed: <diagnosis>`` instead).
    """
    failed = {}
    for r in with_health(records):
        if not r["health"]["trained"]:
            failed.setdefault(r.get(by), r["health"]["diagnosis"])
    ours = table([{**r, "config": {**r["config"], by: r.get(by)}} for r in records], by=[by])
    last = ours.set_index(by)["last_acc_mean"]
    base = last.get("vanilla")
    ref = paper.set_index("method")["value"] if len(paper) else pd.Series(dtype=float)
    ref_base = ref.get("student")
    rows = []
    for _, row in ours.iterrows():
        name = row[by]
        p = ref.get("student" if name == "vanilla" else name)
        rows.append({"method": name,
                     "paper top-1": "–" if p is None else f"{p:.2f}",
                     "paper gain": "–" if p is None or ref_base is None or name == "vanilla" else f"{p - ref_base:+.2f}",
                     "ours last": mean_std(pd.DataFrame([row]), "last_acc").iloc[0],
                     "ours best": mean_std(pd.DataFrame([row]), "best_acc").iloc[0],
                     "n": int(row["n"]),
                     "our gain": (f"failed: {failed[name]}" if name in failed else
                                  "– (the vanilla student failed)" if "vanilla" in failed and name != "vanilla" else
                                  "–" if base is None or name == "vanilla" else f"{row['last_acc_mean'] - base:+.2f}")})
    return pd.DataFrame(rows)
