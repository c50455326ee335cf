"""Train-or-load for a chapter: the methods of a table, on one pair, over the profile's seeds.

For each seed, the runs that have no record yet are trained together with
:func:`~kdlib.train.distill_many` (one teacher forward per step, identical batches), and
every run gets its own record in the store (chapter 0, "the protocol").
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from . import methods as methods_mod
from .models import create_model
from .profiles import Profile
from .results import Store, config_key, train_or_load
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


def run(profile: Profile, teacher: Teacher | None, student_arch: str, methods: dict[str, dict] | list[str], *,
        dataset=None, data_root=None, results_dir="results", seeds=None, device=None, force=False,
        progress=True) -> list[dict]:
    """Records of ``methods`` distilled from ``teacher`` into ``student_arch``, for every seed.

    Args:
        methods: method names, or ``{label: {"method": name, **hyperparameters}}`` for
            variants of one method (e.g. an ablation over SDD's scales).
        seeds: defaults to the profile's.

    Returns:
        the records (one per method and seed), each with ``label`` added.
    """
    specs = {m: {"method": m} for m in methods} if isinstance(methods, (list, tuple)) else methods
    store = Store(results_dir)
    device = device or profile.device
    out = []
    for seed in seeds or profile.seeds:
        paper_pair = profile.paper_pair((teacher.arch, student_arch)) if teacher else (None, None)
        built = {label: methods_mod.for_pair(spec["method"], *paper_pair, **_profile_defaults(profile, spec))
                 if teacher else methods_mod.create(spec["method"], **_profile_defaults(profile, spec))
                 for label, spec in specs.items()}
        configs = [student_config(profile, teacher, student_arch, m, seed) for m in built.values()]

        def train(missing: list[dict]) -> list[dict]:
            ds = dataset or profile.load_data(data_root)
            keys = [config_key(c) for c in missing]

            def student(label: str, method: methods_mod.Method) -> Student:
                # Every student starts from the seed's weights, whichever other runs train beside it.
                torch.manual_seed(seed)
                return Student(label, create_model(student_arch, ds.num_classes, ds.in_channels), method, student_arch)

            students = [student(label, m) for (label, m), c in zip(built.items(), configs) if config_key(c) in keys]
            ckpt = Path(results_dir).parent / "checkpoints" / f"students-{config_key({'runs': keys})}.pt"
            opts = Options(device=device, amp=profile.amp, checkpoint=ckpt, resume=True, progress=progress)
            summaries = distill_many(students, teacher.model if teacher else None, ds, profile.student_recipe(),
                                     teacher_arch=teacher.arch if teacher else None, seed=seed, options=opts)
            ckpt.unlink(missing_ok=True)
            return [{**summaries[s.name], "device": device} for s in students]

        for label, rec in zip(built, train_or_load(configs, train, store, force)):
            out.append({**rec, "label": label})
    return out
