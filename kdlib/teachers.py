"""The teacher zoo of a profile: train a teacher once, then load it (chapter 0, "the teachers of this profile").

Teachers live in ``<results_dir>/teachers/<arch>-<key>.pt`` in RepDistiller's format
(``{'model': state_dict, 'accuracy': ..., 'epoch': ...}``) beside their run record, so the
published book's teachers travel with its results and every student record names the exact
teacher (its SHA-256) it was distilled from. Community checkpoints (CRD's CIFAR-100
teachers) load through :func:`from_checkpoint`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from . import results
from .io import CheckpointError, file_sha256, save_checkpoint
from .models import create_model, load_weights
from .profiles import Profile
from .train import Options, fit


@dataclass
class Teacher:
    """A trained teacher: the network (eval mode, frozen), where its weights are, and how good it is.

    Attributes:
        arch: zoo name.
        model: the network.
        checkpoint: path of its weights; ``sha256`` their hash (records key on it).
        test_acc: top-1 test accuracy in % (last epoch).
        record: its training record (``None`` for an external checkpoint).
    """

    arch: str
    model: nn.Module
    checkpoint: Path
    sha256: str
    test_acc: float
    record: dict | None = None

    def config(self) -> dict:
        """How a student record names its teacher."""
        return {"arch": self.arch, "sha256": self.sha256}


def teacher_config(arch: str, profile: Profile, seed: int = 0) -> dict:
    """The resolved config of a teacher run of ``profile``."""
    return {"role": "teacher", "profile": profile.name, "data": profile.data_config(),
            "student": {"arch": arch}, "method": {"name": "vanilla"}, "teacher": None,
            "recipe": asdict(profile.teacher_recipe()), "amp": profile.amp, "seed": seed}


def get(arch: str, profile: Profile, *, data_root=None, results_dir="results", device: str | None = None,
        force: bool = False, progress: bool = True, dataset=None, train: bool = True) -> Teacher:
    """Load the teacher ``arch`` of ``profile``, training it first if needed.

    A stored teacher is used when its record exists and its checkpoint's hash matches the
    record; otherwise (or with ``force``) it is trained with the profile's teacher recipe,
    saved atomically and recorded.

    Raises:
        LookupError: ``train=False`` and no valid stored teacher.
    """
    store = results.Store(results_dir)
    config = teacher_config(arch, profile)
    ckpt = Path(results_dir) / "teachers" / f"{arch}-{results.config_key(config)}.pt"
    record = None if force else store.get(config)
    if record and ckpt.is_file() and file_sha256(ckpt) == record.get("checkpoint_sha256"):
        return from_checkpoint(arch, ckpt, num_classes=record["num_classes"], in_channels=record["in_channels"],
                               record=record)
    if not train:
        raise LookupError(f"no stored {arch} teacher of profile {profile.name!r} in {Path(results_dir).resolve()}: "
                          f"the chapters train it (make book PROFILE={profile.name})")
    dataset = dataset or profile.load_data(data_root)
    device = device or profile.device
    torch.manual_seed(config["seed"])
    model = create_model(arch, num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    resume = Path(results_dir).parent / "checkpoints" / f"teacher-{results.config_key(config)}.pt"
    summary = fit(model, dataset, profile.teacher_recipe(), seed=config["seed"],
                  options=Options(device=device, amp=profile.amp, checkpoint=resume, resume=True, progress=progress))
    save_checkpoint(ckpt, {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                           "accuracy": summary["last_acc"], "epoch": profile.teacher_epochs})
    summary.update(checkpoint=str(ckpt.relative_to(results_dir)), checkpoint_sha256=file_sha256(ckpt),
                   num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    record = store.put(config, summary, device)
    resume.unlink(missing_ok=True)
    return Teacher(arch, model.eval().requires_grad_(False), ckpt, record["checkpoint_sha256"],
                   record["last_acc"], record)


def from_checkpoint(arch: str, path, num_classes: int = 100, in_channels: int = 3, record: dict | None = None) -> Teacher:
    """A teacher from a checkpoint file in any community format (RepDistiller, SSKD, bare)."""
    path = Path(path)
    model = load_weights(create_model(arch, num_classes=num_classes, in_channels=in_channels), path)
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"teacher checkpoint {str(path)!r} holds NaN/Inf weights ({', '.join(bad[:3])}); "
                              "retrain the teacher (force=True) or use another checkpoint")
    acc = record["last_acc"] if record else float("nan")
    return Teacher(arch, model.eval().requires_grad_(False), path, file_sha256(path), acc, record)
