"""Train-or-load for a chapter: the methods of a table, on one pair, over the profile's seeds.

For each seed, the runs that have no record yet are trained together with
:func:`~kdlib.train.distill_many` (one teacher forward per step, identical batches), and
every run gets its own record in the store (chapter 0, "the protocol"). :func:`cost` measures
what one run costs per epoch (chapter 6).
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from . import methods as methods_mod
from .cost import PeakMemory, time_epoch
from .models import create_model
from .profiles import Profile
from .results import Store, config_key, num_classes, train_or_load, with_health
from .teachers import Teacher
from .train import Options, Student, distill_many


def student_config(profile: Profile, teacher: Teacher | None, arch: str, method: methods_mod.Method, seed: int) -> dict:
    """The resolved config of one student run (what its record is keyed by)."""
    return {"role": "student", "profile": profile.name, "data": profile.data_config(),
            "teacher": teacher.config() if teacher else None, "student": {"arch": arch},
            "method": method.config, "recipe": asdict(profile.student_recipe()), "amp": profile.amp, "seed": seed}


def _profile_defaults(profile: Profile, spec: dict) -> dict:
    """A method's hyperparameters: the spec's, over the profile's (CRD/RRD negatives), over the paper's."""
    hp = {k: v for k, v in spec.items() if k != "method"}
    if profile.nce_k is not None:
        for name in methods_mod.defaults(spec["method"]):
            if name == "nce_k" or name.endswith("__nce_k"):
                hp.setdefault(name, profile.nce_k)
    return hp


def build_method(profile: Profile, teacher_arch: str | None, student_arch: str, spec: dict) -> methods_mod.Method:
    """The method ``spec`` names (``{"method": name, **hyperparameters}``), with the hyperparameters
    the papers give for the pair's comparable CIFAR-100 pair and the profile's CRD/RRD negatives.

    Raises:
        ValueError: an unknown method, hyperparameter, or a value of the wrong type or range.
    """
    if not (isinstance(spec, dict) and isinstance(spec.get("method"), str)):
        raise ValueError(f"a run spec is {{'method': name, **hyperparameters}}, got {spec!r}")
    hp = _profile_defaults(profile, spec)
    if teacher_arch is None:
        return methods_mod.create(spec["method"], **hp)
    return methods_mod.for_pair(spec["method"], *profile.paper_pair((teacher_arch, student_arch)), **hp)


def as_specs(methods: dict[str, dict] | list[str]) -> dict[str, dict]:
    """``{label: spec}`` from method names or from ``{label: spec}`` itself."""
    return {m: {"method": m} for m in methods} if isinstance(methods, (list, tuple)) else dict(methods)


def cost(profile: Profile, teacher: Teacher | None, student_arch: str, spec: dict, dataset, *,
         results_dir="results", device: str | None = None, train_images: int | None = None,
         test_images: int = 1, force: bool = False) -> dict:
    """What one student of ``spec`` costs to train on ``dataset``'s training split (chapter 6),
    measured once and then loaded: cost measurements are records like runs.

    A fresh student (seed 0) trains alone for two epochs with the profile's recipe and
    precision; the second epoch is timed (:func:`kdlib.cost.time_epoch`: its steps, the shared
    teacher forward included, its set-up and the evaluation of ``test_images`` images) and the
    whole run's peak memory is measured (:class:`kdlib.cost.PeakMemory`). ``train_images``
    times a class-balanced subset of that many images (the cost per image is what compares).

    Returns:
        the record, with ``epoch_s`` (wall-clock s of one epoch), ``cpu_s`` (CPU s of this
        process), ``peak_mb`` (MB), ``images`` (training images in the timed epoch) and
        ``ms_per_image``; its ``env`` says on which machine it was measured.
    """
    device = device or profile.device
    ds = dataset.subset(train_images, test_images)
    method = build_method(profile, teacher.arch if teacher else None, student_arch, spec)
    config = {**student_config(profile, teacher, student_arch, method, 0), "role": "cost",
              "timed": {"train_images": len(ds.train), "test_images": len(ds.test), "device": device}}
    store = Store(results_dir)
    record = None if force else store.get(config)
    if record is None:
        torch.manual_seed(0)
        student = Student(spec["method"], create_model(student_arch, ds.num_classes, ds.in_channels), method)
        with PeakMemory(device) as memory:
            seconds, cpu_seconds = time_epoch([student], teacher.model if teacher else None, ds,
                                              profile.student_recipe(), options=Options(device=device, amp=profile.amp))
        record = store.put(config, {"epoch_s": seconds, "cpu_s": cpu_seconds, "peak_mb": memory.mb,
                                    "images": len(ds.train), "ms_per_image": 1000 * seconds / len(ds.train)}, device)
    return record


def run(profile: Profile, teacher: Teacher | None, student_arch: str, methods: dict[str, dict] | list[str], *,
        dataset=None, data_root=None, results_dir="results", seeds=None, device=None, force=False,
        progress=True, train: bool = True) -> list[dict]:
    """Records of ``methods`` distilled from ``teacher`` into ``student_arch``, for every seed.

    Args:
        methods: method names, or ``{label: {"method": name, **hyperparameters}}`` for
            variants of one method (e.g. an ablation over SDD's scales).
        seeds: defaults to the profile's.
        train: train the runs that have no record; ``False`` returns only the stored ones
            (the benchmark chapter collects the other chapters' runs this way).

    Returns:
        the records (one per method and seed), each with ``label`` added.
    """
    specs = as_specs(methods)
    store = Store(results_dir)
    device = device or profile.device
    out = []
    for seed in seeds or profile.seeds:
        built = {label: build_method(profile, teacher.arch if teacher else None, student_arch, spec)
                 for label, spec in specs.items()}
        configs = [student_config(profile, teacher, student_arch, m, seed) for m in built.values()]

        def train_missing(missing: list[dict]) -> list[dict]:
            ds = dataset or profile.load_data(data_root)
            keys = [config_key(c) for c in missing]
            # A group stopped while its records were being written left the checkpoint of all its
            # runs: resume the whole group from it (nothing retrains) rather than start the rest anew.
            whole = checkpoint_of([config_key(c) for c in configs])
            if whole.exists():
                keys = [config_key(c) for c in configs]

            def student(label: str, method: methods_mod.Method) -> Student:
                # Every student starts from the seed's weights, whichever other runs train beside it.
                torch.manual_seed(seed)
                return Student(label, create_model(student_arch, ds.num_classes, ds.in_channels), method)

            chosen = [(label, m, c) for (label, m), c in zip(built.items(), configs) if config_key(c) in keys]
            ckpt = checkpoint_of(keys)
            checkpoints.append(ckpt)
            opts = Options(device=device, amp=profile.amp, checkpoint=ckpt, resume=True, progress=progress)
            summaries = distill_many([student(label, m) for label, m, _ in chosen], teacher.model if teacher else None,
                                     ds, profile.student_recipe(), seed=seed, options=opts)
            by_key = {config_key(c): {**summaries[label], "device": device} for label, _, c in chosen}
            return [by_key[config_key(c)] for c in missing]

        def checkpoint_of(keys: list[str]) -> Path:
            return Path(results_dir).parent / "checkpoints" / f"students-{config_key({'runs': keys})}.pt"

        checkpoints: list[Path] = []
        recs = train_or_load(configs, train_missing, store, force) if train else [store.get(c) for c in configs]
        for ckpt in checkpoints:  # only once every record is written: a kill before loses nothing
            for group in (ckpt, *ckpt.parent.glob(f"{ckpt.stem}.group*{ckpt.suffix}")):
                group.unlink(missing_ok=True)
        out += [{**rec, "label": label} for label, rec in zip(built, recs) if rec is not None]
    return out


# ---------------------------------------------------------------------------------------------
# The book's runs: every chapter's main table and controls, seed by seed (``python -m kdlib runs``)

def book_groups(profile: Profile, chapters=None) -> list[tuple[str, int, dict[str, dict]]]:
    """``(chapter, pair index, {label: spec})`` for each chapter's main table and controls on each
    of the profile's two pairs, in the book's order (a run two chapters share is listed once, by
    the first: :func:`kdlib.chapters.book_runs`)."""
    from .chapters import CHAPTERS, book_runs
    unknown = sorted(set(chapters or ()) - set(CHAPTERS))
    if unknown:
        raise ValueError(f"unknown chapter(s) {', '.join(unknown)}; chapters with runs: {', '.join(CHAPTERS)}")
    groups: dict[tuple[str, int], dict[str, dict]] = {}
    for (index, label), (name, spec) in book_runs(profile).items():
        if chapters is None or name in chapters:
            groups.setdefault((name, index), {})[label] = spec
    return [(name, index, specs) for (name, index), specs in groups.items()]


def train_book(profile: Profile, *, chapters=None, data_root=None, results_dir="results", progress=True,
               train: bool = True, force: bool = False, report=print) -> list[dict]:
    """Train (or load) every run of the book in ``profile``, one seed at a time: all chapters of
    seed 0, then seed 1, ..., so that an interrupted build has complete seeds for every chapter.

    Each chapter's runs on one pair train as one group (one teacher forward per step, identical
    batches); records are written as each group finishes and an interrupted group resumes from
    its checkpoint. ``report`` gets one line per group. With ``train=False`` nothing trains and
    the lines say what is stored; ``force`` retrains runs that have a record.

    Returns:
        the records, each with ``label``, ``chapter`` and ``pair`` (``"resnet20→resnet8"``) added.
    """
    import time

    from . import teachers
    groups = book_groups(profile, chapters)
    dataset = profile.load_data(data_root)
    teacher = {}
    out = []
    for seed in profile.seeds:
        for name, index, specs in groups:
            pair = profile.pairs[index]
            if pair[0] not in teacher:
                try:
                    teacher[pair[0]] = teachers.get(pair[0], profile, data_root=data_root, results_dir=results_dir,
                                                    progress=progress, dataset=dataset, train=train)
                except LookupError:  # load-only and this teacher is not trained yet
                    report(f"seed {seed} {name} {'→'.join(pair)}: 0 of {len(specs)} runs stored (no teacher)")
                    continue
            t0 = time.perf_counter()
            recs = run(profile, teacher[pair[0]], pair[1], specs, dataset=dataset, results_dir=results_dir,
                       seeds=[seed], progress=progress, train=train, force=force)
            report(f"seed {seed} {name} {'→'.join(pair)}: {len(recs)} of {len(specs)} runs "
                   f"{'recorded' if train else 'stored'} ({time.perf_counter() - t0:.0f} s)")
            out += [{**r, "chapter": name, "pair": "→".join(pair)} for r in recs]
    return out


# ---------------------------------------------------------------------------------------------
# The pilot: how noisy and how dear the published profile's candidates are (chapter 0)

# Cells that share the 10 000-image teacher first, then the two other training sizes.
PILOT_CELLS = ((10000, 15, 64), (10000, 8, 64), (10000, 8, 128), (10000, 15, 128), (2000, 15, 64), (10000, 30, 64),
               (60000, 8, 64))
PILOT_SEEDS = (0, 1, 2, 3)
PILOT_PAIR = ("resnet20", "resnet8")
PILOT_STUDENTS = ("resnet8", "vgg8", "ShuffleV2", "ShuffleV1", "MobileNetV2")   # candidates of the cross pair
PILOT_TIMED_IMAGES = 2000


def pilot_profile(train_size: int, epochs: int, batch_size: int) -> Profile:
    """The ``cpu`` profile at one cell of the pilot's grid (the full test set, float32)."""
    from . import profiles
    return profiles.get("cpu", train_size=train_size, epochs=epochs, batch_size=batch_size)


def pilot(cells=PILOT_CELLS, seeds=PILOT_SEEDS, *, results_dir="results", data_root=None, progress=True,
          train: bool = True) -> list[dict]:
    """Vanilla and KD on resnet20 → resnet8 at every cell ``(train_size, epochs, batch_size)``
    of the grid, for every seed: the noise the published profile is designed from.

    Each training size has its own teacher (the profile's teacher recipe at batch 64, trained
    on that subset); the cells differing only in batch size share it. Records are written as
    each seed's pair of runs finishes, so an interrupted pilot resumes where it stopped.

    Returns:
        the records, each with ``label`` and ``cell`` (``(train_size, epochs, batch_size)``) added;
        with ``train=False`` only the stored ones (the foundations chapter reads them so).
    """
    from . import teachers
    out = []
    for n, epochs, batch in cells:
        profile = pilot_profile(n, epochs, batch)
        try:
            teacher = teachers.get(PILOT_PAIR[0], pilot_profile(n, epochs, 64), data_root=data_root,
                                   results_dir=results_dir, progress=progress, train=train)
        except LookupError:  # load-only and this cell's teacher is not trained yet: nothing stored
            continue
        recs = run(profile, teacher, PILOT_PAIR[1], ["vanilla", "kd"], data_root=data_root, results_dir=results_dir,
                   seeds=seeds, progress=progress, train=train)
        out += [{**r, "cell": (n, epochs, batch)} for r in recs]
    return out


def pilot_costs(students=PILOT_STUDENTS, *, results_dir="results", data_root=None, progress=True) -> list[dict]:
    """Cost records of vanilla and KD from the pilot's resnet20 (10 000 images) into each
    candidate student, timed on ``PILOT_TIMED_IMAGES`` training images."""
    from . import teachers
    profile = pilot_profile(*PILOT_CELLS[0])
    teacher = teachers.get(PILOT_PAIR[0], profile, data_root=data_root, results_dir=results_dir, progress=progress)
    ds = profile.load_data(data_root)
    return [{**cost(profile, teacher, arch, {"method": m}, ds, results_dir=results_dir,
                    train_images=PILOT_TIMED_IMAGES), "label": m, "student": arch}
            for arch in students for m in ("vanilla", "kd")]


def pilot_table(records: list[dict]) -> "pd.DataFrame":
    """The pilot's noise and cost per cell (chapter 0, "the pilot"), from :func:`pilot`'s records.

    Returns:
        one row per cell ``(train_size, epochs, batch_size)``: ``n`` (seeds with both runs),
        ``vanilla``/``kd`` mean and sample std of the last-epoch accuracy (%), ``seed_sd`` (the
        two methods' pooled seed std), ``paired_sd`` (std of the per-seed KD − vanilla
        differences), ``gap`` (their mean), ``mde_n`` for n = 4, 5, 8 seeds at that paired std,
        ``seeds_for_1`` (seeds for an MDE of 1 point), and ``group_s`` (mean wall-clock seconds
        of one seed's two runs trained together, the teacher forward included).
    """
    import pandas as pd

    from . import stats
    rows = []
    cells = sorted({r["cell"] for r in records}, key=lambda c: (c[0], c[1], c[2]))
    for cell in cells:
        acc = {m: {r["config"]["seed"]: r["last_acc"] for r in records
                   if r["cell"] == cell and r["config"]["method"]["name"] == m} for m in ("vanilla", "kd")}
        seeds = sorted(set(acc["vanilla"]) & set(acc["kd"]))
        if len(seeds) < 2:
            continue
        v = pd.Series([acc["vanilla"][s] for s in seeds])
        k = pd.Series([acc["kd"][s] for s in seeds])
        d = stats.paired(k, v)
        wall = [r["wall_time"] for r in records if r["cell"] == cell and r["config"]["method"]["name"] == "kd"]
        rows.append({"train_size": cell[0], "epochs": cell[1], "batch_size": cell[2], "n": len(seeds),
                     "vanilla_mean": v.mean(), "vanilla_sd": v.std(), "kd_mean": k.mean(), "kd_sd": k.std(),
                     "seed_sd": ((v.var() + k.var()) / 2) ** 0.5, "gap": d.diff, "paired_sd": d.sd,
                     **{f"mde_{n}": stats.mde(n, d.sd) for n in (4, 5, 8)},
                     "seeds_for_1": stats.seeds_for(1.0, d.sd) if d.sd > 0 else 2,
                     "group_s": sum(wall) / len(wall)})
    return pd.DataFrame(rows)


# The first published design (2000 training / 2000 test images, 8 epochs): its collapses and
# their float32 reruns are the evidence of chapter 3 (AB, FT) and chapter 5 (TTM, WTTM).
FIRST_DESIGN = {"profile": "cpu", "data.train_size": 2000, "data.test_size": 2000, "recipe.epochs": 8}


def first_design(student: str, methods: list[str], results_dir="results") -> "pd.DataFrame":
    """The first design's stored runs of ``methods`` into ``student``, in both precisions.

    Returns:
        one row per run: ``method``, ``weight`` (TTM's/WTTM's β, else NaN), ``precision``
        (``"bf16"`` or ``"float32"``), ``seed``, ``last_acc`` (%) and ``health`` (``"trained"``
        or the diagnosis, judged against the vanilla run of the same seed and precision).
    """
    import numpy as np
    import pandas as pd
    recs = [r for r in Store(results_dir).records(**FIRST_DESIGN, **{"student.arch": student})
            if r["config"]["method"]["name"] in methods]
    rows = []
    for r in with_health(recs):
        m = r["config"]["method"]
        rows.append({"method": m["name"], "weight": m.get("ttm_weight", m.get("wttm_weight", np.nan)),
                     "precision": "bf16" if r["config"]["amp"] else "float32", "seed": r["config"]["seed"],
                     "last_acc": r["last_acc"],
                     "health": "trained" if r["health"]["trained"] else r["health"]["diagnosis"]})
    return pd.DataFrame(rows, columns=["method", "weight", "precision", "seed", "last_acc", "health"])


def rerun(records: list[dict], *, results_dir="results", data_root=None, progress=True, **profile_overrides) -> list[dict]:
    """Train the runs of stored ``records`` again with one profile setting changed (e.g.
    ``amp=False``: the float32 rerun that tells a precision problem from a method's failure).

    Everything else comes from each record: the profile and its data subset, the recipe's length
    and batch, the method's hyperparameters, the seed, and the very teacher checkpoint (found in
    ``<results_dir>/teachers`` by its hash). Runs of one seed train together; each new record
    comes back labelled with the key of the record it reruns.

    Raises:
        LookupError: a record's teacher checkpoint is not stored.
    """
    from . import profiles, teachers
    from .io import file_sha256
    shelf = {file_sha256(p): p for p in (Path(results_dir) / "teachers").glob("*.pt")}
    groups: dict[str, list[dict]] = {}
    for r in records:
        c = r["config"]
        same = [c["teacher"], c["student"]["arch"], c["data"], c["recipe"], c["profile"], c["amp"], c["seed"]]
        groups.setdefault(json.dumps(same, sort_keys=True, default=str), []).append(r)
    out = []
    for recs in groups.values():
        c = recs[0]["config"]
        arch, seed = c["student"]["arch"], c["seed"]
        stored = replace(profiles.get(c["profile"]), train_size=c["data"]["train_size"],
                         test_size=c["data"]["test_size"], epochs=c["recipe"]["epochs"],
                         batch_size=c["recipe"]["batch_size"], amp=c["amp"])
        profile = replace(stored, **profile_overrides)
        sha = c["teacher"]["sha256"]
        if sha not in shelf:
            raise LookupError(f"teacher {c['teacher']['arch']} (sha256 {sha[:12]}) is not in {Path(results_dir) / 'teachers'}")
        channels = c["data"].get("channels", 1 if c["data"]["name"] == "fashion_mnist" else 3)
        t = teachers.from_checkpoint(c["teacher"]["arch"], shelf[sha], num_classes=num_classes(recs[0]),
                                     in_channels=channels)
        specs = {r["key"]: {"method": r["config"]["method"]["name"],  # keys: two runs may share a label
                            **{k: v for k, v in r["config"]["method"].items() if k not in ("name", "schedule")}}
                 for r in recs}
        out += run(profile, t, arch, specs, data_root=data_root, results_dir=results_dir, seeds=[seed],
                   progress=progress)
    return out

