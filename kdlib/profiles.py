"""Profiles: one name sets the dataset, subset sizes, epochs, pairs and seeds of every chapter.

| profile | data | purpose |
|---|---|---|
| smoke | synthetic, tiny subsets, 3 epochs | CI: every chapter runs end to end in minutes |
| quick | Fashion-MNIST, 2000 images, 8 epochs, 2 seeds | teaching: the book in about an hour, no verdicts |
| cpu   | Fashion-MNIST, 10 000 training images, full test set, 8 epochs, 5 seeds | the published book, designed for power (the default) |
| gpu   | Fashion-MNIST full size, CRD-zoo pairs, 3 seeds | a real comparison on one GPU |
| paper | CIFAR-100, the papers' pairs, CRD recipe, 5 seeds | reproducing the papers |

Explicit notebook parameters override a profile's fields (:func:`get` takes them as keywords).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from .data import Dataset, load
from .train import RECIPES, Recipe


@dataclass(frozen=True)
class Profile:
    """The settings of one profile.

    Attributes:
        name: profile name (stored in every record).
        dataset: dataset name for :func:`kdlib.data.load`; ``dataset_kwargs`` go with it.
        train_size, test_size: class-balanced subset sizes (``None``: the whole split).
        epochs, teacher_epochs: run lengths of students and teachers; the recipe's
            milestones (and methods' schedules) scale to them.
        batch_size: training batch size.
        seeds: student seeds (a table reports mean ± std over them).
        pairs: ``(teacher, student)`` pairs: the first is same-family and the second
            cross-family (the chapters run these two); the benchmark runs them all.
        device: default device.
        recipe: name in :data:`kdlib.train.RECIPES`.
        nce_k: negatives of CRD / queue length of RRD (``None``: the papers' 16384, which a
            small subset cannot supply: CRD draws its negatives from the other classes).
        amp: bf16 autocast (``None``: on for CUDA only). On this book's 2-core CPU it makes
            resnet8 students 2x faster on a CPU with native bf16 (AVX-512 BF16) and ~10x slower on one
            without it (AVX2 only), so the CPU profiles train in float32.
        verdicts: whether chapters judge claims in this profile (the quick teaching profile's
            noise cannot: it shows the gaps without verdicts).
        comparable: ``{(teacher, student): (paper teacher, paper student)}``: the CIFAR-100 pair
            whose per-pair hyperparameters (DKD's beta, TTM's gamma and beta, SDD's scales...)
            a profile pair uses; a pair not listed uses its own (the paper profile).
    """

    name: str
    dataset: str
    dataset_kwargs: dict = field(default_factory=dict)
    train_size: int | None = None
    test_size: int | None = None
    epochs: int = 240
    teacher_epochs: int = 240
    batch_size: int = 64
    seeds: tuple[int, ...] = (0,)
    pairs: tuple[tuple[str, str], ...] = ()
    device: str = "cpu"
    recipe: str = "crd"
    nce_k: int | None = None
    amp: bool | None = None
    comparable: dict = field(default_factory=dict)
    verdicts: bool = True

    def paper_pair(self, pair: tuple[str, str]) -> tuple[str, str]:
        """The CIFAR-100 pair whose reported hyperparameters ``pair`` uses."""
        return self.comparable.get(tuple(pair), tuple(pair))

    def load_data(self, root=None) -> Dataset:
        """The profile's dataset with its subsets (subsets drawn with seed 0, for every run)."""
        ds = load(self.dataset, root, **self.dataset_kwargs)
        return ds.subset(self.train_size, self.test_size, seed=0)

    def data_config(self) -> dict:
        """What identifies the data in a record."""
        return {"name": self.dataset, **self.dataset_kwargs, "train_size": self.train_size,
                "test_size": self.test_size, "subset_seed": 0}

    def student_recipe(self) -> Recipe:
        return RECIPES[self.recipe].scaled(self.epochs, self.batch_size)

    def teacher_recipe(self) -> Recipe:
        return RECIPES[self.recipe].scaled(self.teacher_epochs, self.batch_size)


# Our small pairs borrow the hyperparameters the papers tuned for the closest CIFAR-100 pair: a
# deeper ResNet into a shallower one (resnet56 -> resnet20), and the papers' VGG teacher into a
# small network of another family (vgg13 -> MobileNetV2). The cross-family student is resnet8:
# on this book's 2-core CPU a vanilla student costs 0.80 ms per training image as resnet8, 1.65
# as MobileNetV2, 4.1 as vgg8 and 5.8-6.5 as a ShuffleNet (the pilot's costs, chapter 0), and
# the teacher's forward is shared by every student of a group.
SMALL_PAIRS = {("resnet20", "resnet8"): ("resnet56", "resnet20"),
               ("vgg13", "resnet8"): ("vgg13", "MobileNetV2")}

PROFILES = {
    # Long enough that most smoke runs train (the teachers reach 100% on the generated images) and
    # some fail, so CI runs both branches of every chapter's health handling.
    "smoke": Profile("smoke", "synthetic", dict(num_classes=10, train_size=256, test_size=128, channels=1),
                     epochs=3, teacher_epochs=15, batch_size=32, seeds=(0,), nce_k=128,
                     pairs=tuple(SMALL_PAIRS), comparable=SMALL_PAIRS),
    # The first published design (2000 training / 2000 test images, 8 epochs, 2 seeds): a seed
    # spread of ~0.9 points and paired differences of ~1.2 resolve nothing below ~5 points, so
    # it stays only as a teaching profile whose chapters give no verdicts. float32: bf16 autocast
    # is ~10x slower than float32 on CPUs without native bf16 (AVX2 only, measured here).
    "quick": Profile("quick", "fashion_mnist", train_size=2000, test_size=2000, epochs=8, teacher_epochs=20,
                     batch_size=64, seeds=(0, 1), nce_k=1024, amp=False, pairs=tuple(SMALL_PAIRS),
                     comparable=SMALL_PAIRS, verdicts=False),
    # The published profile, designed for power from the pilot (chapter 0, "the pilot";
    # kdlib.experiments.pilot, resnet20 -> resnet8 on the full 10 000-image test set, float32):
    # with 10 000 training images the paired KD - vanilla differences have sd 0.30 points after
    # 15 epochs and 0.55 after 8, so 5 seeds give an MDE of 0.50 or 0.92 points; the book's ~80
    # runs per seed cost about 22 h at 15 epochs and 12 h at 8 on this 2-core CPU, so 8 epochs.
    "cpu": Profile("cpu", "fashion_mnist", train_size=10000, test_size=None, epochs=8, teacher_epochs=15,
                   batch_size=64, seeds=(0, 1, 2, 3, 4), nce_k=4096, amp=False, pairs=tuple(SMALL_PAIRS),
                   comparable=SMALL_PAIRS),
    "gpu": Profile("gpu", "fashion_mnist", epochs=30, teacher_epochs=60, batch_size=64, seeds=(0, 1, 2),
                   device="cuda", amp=True,
                   pairs=(("resnet32x4", "resnet8x4"), ("vgg13", "MobileNetV2"), ("vgg13", "vgg8"),
                          ("wrn_40_2", "wrn_16_2"), ("resnet32x4", "ShuffleV1"))),
    "paper": Profile("paper", "cifar100", epochs=240, teacher_epochs=240, batch_size=64, seeds=(0, 1, 2, 3, 4),
                     device="cuda", amp=True,
                     pairs=(("resnet32x4", "resnet8x4"), ("vgg13", "MobileNetV2"), ("vgg13", "vgg8"),
                            ("wrn_40_2", "wrn_16_2"), ("resnet56", "resnet20"), ("resnet32x4", "ShuffleV1"),
                            ("ResNet50", "MobileNetV2"), ("wrn_40_2", "ShuffleV1"))),
}


def list_profiles() -> list[str]:
    """Names accepted by :func:`get`."""
    return list(PROFILES)


def get(name: str, **overrides) -> Profile:
    """A profile by name, with fields overridden (``None`` values are ignored).

    Raises:
        ValueError: unknown profile or field, or an override of the wrong type/range.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    valid = {f.name for f in fields(Profile)} - {"name"}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ValueError(f"profiles have no field {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for k in ("epochs", "teacher_epochs", "batch_size"):
        if k in overrides and not (_is_int(overrides[k]) and overrides[k] >= 1):
            raise ValueError(f"{k} must be a positive int, got {overrides[k]!r}")
    if "seeds" in overrides:
        seeds = overrides["seeds"]
        if _is_int(seeds):
            seeds = (seeds,)
        if not (isinstance(seeds, (list, tuple)) and seeds and all(_is_int(s) for s in seeds)):
            raise ValueError(f"seeds must be a non-empty list of ints, got {overrides['seeds']!r}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct (a repeated seed would count one run twice), got {list(seeds)}")
        overrides["seeds"] = tuple(seeds)
    if "pairs" in overrides:
        from .models import list_models
        pairs = overrides["pairs"]
        if not (isinstance(pairs, (list, tuple)) and pairs
                and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs)):
            raise ValueError(f"pairs must be a non-empty list of [teacher, student] names, got {pairs!r}")
        unknown = sorted({a for p in pairs for a in p if a not in list_models()})
        if unknown:
            raise ValueError(f"pairs name unknown models {unknown}; valid models: {', '.join(list_models())}")
        overrides["pairs"] = tuple(tuple(p) for p in pairs)
    for k in ("train_size", "test_size"):
        if k in overrides and not (_is_int(overrides[k]) and overrides[k] >= 1):
            raise ValueError(f"{k} must be a positive int (None: the whole split), got {overrides[k]!r}")
    return replace(PROFILES[name], **overrides)


def _is_int(value) -> bool:
    """An int that is not a bool (papermill turns ``-p epochs True`` into ``True``, which is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)
