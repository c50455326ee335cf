"""Datasets as uint8 tensors, and a loader that augments on the device (chapter 0, "the protocol").

``load(name)`` returns a :class:`Dataset` whose splits hold the whole image set as one uint8
tensor ``(N, C, H, W)``. :class:`DeviceLoader` keeps a split on the target device and builds
each batch with tensor ops there: index, random crop with zero padding, horizontal flip,
normalise. No DataLoader workers and no PIL in the training loop.

Datasets: ``fashion_mnist`` (real, served as 1x32x32: zero-padded by 2 as LeNet did, so the
CIFAR zoo runs unchanged), ``cifar100`` and ``cifar10`` (the official python pickles),
``synthetic`` (seeded, learnable, any shape).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are in none of the places searched."""


@dataclass
class Split:
    """One split: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``.

    ``mean``/``std`` (per channel, in [0, 1] units) travel with the split so a loader can
    normalise it on its own.
    """

    images: Tensor
    labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int, seed: int = 0) -> "Split":
        """A seeded, class-balanced subset of ``n`` samples (``n // K`` per class, the
        remainder spread over the first classes); samples keep their original order."""
        classes = torch.unique(self.labels)
        if not 0 < n <= len(self):
            raise ValueError(f"subset size must be in 1..{len(self)}, got {n}")
        g = torch.Generator().manual_seed(seed)
        per_class = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
        picked = []
        for c, k in zip(classes, per_class):
            idx = torch.nonzero(self.labels == c).flatten()
            if k > len(idx):
                raise ValueError(f"class {int(c)} has {len(idx)} samples, a balanced subset of {n} needs {k}")
            picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
        keep = torch.cat(picked).sort().values
        return replace(self, images=self.images[keep], labels=self.labels[keep])


@dataclass
class Dataset:
    """A dataset: ``train``/``test`` splits, class names and normalisation constants."""

    name: str
    train: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    def subset(self, train: int | None = None, test: int | None = None, seed: int = 0) -> "Dataset":
        """Class-balanced subsets of either split (``None`` keeps the split whole)."""
        return replace(self,
                       train=self.train if train is None else self.train.subset(train, seed),
                       test=self.test if test is None else self.test.subset(test, seed))


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (gzipped IDX files)

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of the decompressed IDX payloads: the same for the official files and Debian's
# re-compressed copies, so one check covers every source.
FASHION_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# Mean/std of the 28x28 training images; the 2-pixel zero border then normalises to
# -mean/std, exactly like the zero padding of a random crop.
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)


def parse_idx(payload: bytes) -> np.ndarray:
    """Decode an (uncompressed) IDX file of unsigned bytes into an array of its shape."""
    if len(payload) < 4 or payload[:2] != b"\0\0" or payload[2] != 0x08:
        raise ValueError("not an IDX file of unsigned bytes (bad magic number)")
    ndim = payload[3]
    dims = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"IDX file is truncated: header says {dims}, found {data.size} values")
    return data.reshape(dims)


def _read_fashion_file(folder: Path, stem: str) -> np.ndarray:
    for name in (stem + ".gz", stem):
        path = folder / name
        if path.is_file():
            try:
                payload = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise ValueError(f"{path} is corrupt or not a gzip file ({e}); "
                                 "delete it and get the data again") from None
            if hashlib.sha256(payload).hexdigest() != FASHION_FILES[stem]:
                raise ValueError(f"{path} is corrupt or not the official Fashion-MNIST file "
                                 "(checksum mismatch); delete it and get the data again")
            return parse_idx(payload)
    raise FileNotFoundError(folder / (stem + ".gz"))


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
        while block := r.read(1 << 20):
            f.write(block)
    os.replace(tmp, dest)


def _search_folders(root: str | os.PathLike | None, sub: str) -> list[Path]:
    roots = [Path(root)] if root else []
    roots.append(Path(os.environ.get("KDLIB_DATA", Path.home() / ".cache" / "kdlib")))
    return [p for r in roots for p in (r / sub, r)]


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST as 1x32x32 uint8 images (28x28 zero-padded by 2), 60k/10k, 10 classes.

    Looks in ``root`` (and ``root/fashion_mnist``), ``$KDLIB_DATA`` (default
    ``~/.cache/kdlib``), Debian's ``/usr/share/datasets/fashion-mnist``, then downloads into
    ``root or $KDLIB_DATA`` where a network exists. Every file is checked by checksum.
    """
    folders = _search_folders(root, "fashion_mnist") + [FASHION_DEBIAN]
    for folder in folders:
        try:
            arrays = {stem: _read_fashion_file(folder, stem) for stem in FASHION_FILES}
            break
        except FileNotFoundError:
            continue
    else:
        target = _search_folders(root, "fashion_mnist")[0]
        if not download:
            raise _missing("fashion_mnist", folders)
        try:
            for stem in FASHION_FILES:
                _download(FASHION_URL + stem + ".gz", target / (stem + ".gz"))
        except OSError as e:
            raise _missing("fashion_mnist", folders, f"download from {FASHION_URL} failed: {e}") from None
        return load_fashion_mnist(root, download=False)

    def split(kind: str) -> Split:
        images = torch.from_numpy(arrays[f"{kind}-images-idx3-ubyte"].copy())
        images = torch.nn.functional.pad(images, (2, 2, 2, 2)).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{kind}-labels-idx1-ubyte"].astype(np.int64))
        return Split(images, labels, FASHION_MEAN, FASHION_STD)

    return Dataset("fashion_mnist", split("train"), split("t10k"), FASHION_CLASSES, FASHION_MEAN, FASHION_STD)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (the official "python version" pickles)

CIFAR = {
    "cifar100": dict(folder="cifar-100-python", archive="cifar-100-python.tar.gz",
                     md5="eb9058c3a382ffc7106e4002c42a8d85", train=["train"], test=["test"],
                     meta="meta", names="fine_label_names", labels="fine_labels",
                     mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761)),
    "cifar10": dict(folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
                    md5="c58f30108f718f92721af3b95e74349a",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    meta="batches.meta", names="label_names", labels="labels",
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        try:
            return pickle.load(f, encoding="latin1")
        except Exception as e:  # a broken pickle raises many different types
            raise ValueError(f"{path} is corrupt or not a CIFAR pickle ({type(e).__name__}: {e})") from None


def _read_cifar_split(folder: Path, spec: dict, files: list[str]) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for name in files:
        d = _unpickle(folder / name)
        try:
            data, y = np.asarray(d["data"], dtype=np.uint8), np.asarray(d[spec["labels"]], dtype=np.int64)
        except KeyError as e:
            raise ValueError(f"{folder / name} lacks the key {e}; not a CIFAR pickle of this kind") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(y) != len(data):
            raise ValueError(f"{folder / name}: expected data (N, 3072) and N labels, "
                             f"got {data.shape} and {len(y)}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _find_cifar(name: str, root, download: bool) -> Path:
    spec = CIFAR[name]
    searched = []
    for base in _search_folders(root, name):
        folder = base / spec["folder"]
        searched.append(folder)
        if (folder / spec["meta"]).is_file():
            return folder
        archive = base / spec["archive"]
        searched.append(archive)
        if archive.is_file():
            _extract(archive, spec["md5"])
            return folder
    if download:
        archive = _search_folders(root, name)[0] / spec["archive"]
        try:
            _download(CIFAR_URL + spec["archive"], archive)
        except OSError as e:
            raise _missing(name, searched, f"download from {CIFAR_URL} failed: {e}") from None
        _extract(archive, spec["md5"])
        return archive.parent / spec["folder"]
    raise _missing(name, searched)


def _extract(archive: Path, md5: str) -> None:
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != md5:
        raise ValueError(f"{archive} has MD5 {digest}, expected {md5}: corrupt or not the official archive")
    with tarfile.open(archive) as tar:
        tar.extractall(archive.parent, filter="data")


def load_cifar(name: str = "cifar100", root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """CIFAR-100 or CIFAR-10 as uint8 ``(N, 3, 32, 32)`` from the official python pickles.

    Looks for the extracted folder (``cifar-100-python/`` / ``cifar-10-batches-py/``) or the
    official ``.tar.gz`` (MD5-checked) in ``root``, ``root/<name>`` and ``$KDLIB_DATA``, and
    downloads the archive there where a network exists.
    """
    spec = CIFAR[name]
    folder = _find_cifar(name, root, download)
    classes = list(_unpickle(folder / spec["meta"])[spec["names"]])
    train = Split(*_read_cifar_split(folder, spec, spec["train"]), spec["mean"], spec["std"])
    test = Split(*_read_cifar_split(folder, spec, spec["test"]), spec["mean"], spec["std"])
    return Dataset(name, train, test, classes, spec["mean"], spec["std"])


def _missing(name: str, searched: list[Path], why: str = "") -> DatasetNotFoundError:
    how = {
        "fashion_mnist": "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist`; elsewhere download "
                         f"the four *-ubyte.gz files from {FASHION_URL} into data_root.",
        "cifar100": f"Download {CIFAR_URL}cifar-100-python.tar.gz into data_root (kdlib extracts it).",
        "cifar10": f"Download {CIFAR_URL}cifar-10-python.tar.gz into data_root (kdlib extracts it).",
    }[name]
    places = "\n  ".join(map(str, searched))
    return DatasetNotFoundError(f"dataset {name!r} not found. Searched:\n  {places}\n"
                                f"{why + chr(10) if why else ''}{how}")


# ---------------------------------------------------------------------------------------------
# Synthetic data: learnable, seeded, any shape

def load_synthetic(num_classes: int = 10, train_size: int = 512, test_size: int = 256,
                   channels: int = 3, size: int = 32, seed: int = 0, noise: float = 0.35) -> Dataset:
    """A seeded dataset that a small network can learn: each class is a smooth random
    pattern (a low-resolution prototype upsampled to ``size``), each image that pattern,
    randomly shifted by up to 3 pixels, plus pixel noise of relative scale ``noise``.

    Returns uint8 images ``(N, channels, size, size)`` and balanced labels.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, channels, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(protos, size=(size, size), mode="bilinear", align_corners=False)

    def make(n: int) -> Split:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        shifts = torch.randint(-3, 4, (n, 2), generator=g)
        base = torch.stack([protos[y].roll(tuple(s.tolist()), dims=(1, 2)) for y, s in zip(labels, shifts)])
        x = (1 - noise) * base + noise * torch.rand(base.shape, generator=g)
        images = (x * 255).round().clamp(0, 255).to(torch.uint8)
        return Split(images, labels, (0.5,) * channels, (0.25,) * channels)

    train, test = make(train_size), make(test_size)
    return Dataset("synthetic", train, test, [f"class {i}" for i in range(num_classes)],
                   train.mean, train.std)


_LOADERS = {
    "fashion_mnist": lambda root, **kw: load_fashion_mnist(root, **kw),
    "cifar100": lambda root, **kw: load_cifar("cifar100", root, **kw),
    "cifar10": lambda root, **kw: load_cifar("cifar10", root, **kw),
    "synthetic": lambda root, **kw: load_synthetic(**kw),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_LOADERS)


def load(name: str, root: str | os.PathLike | None = None, **kwargs) -> Dataset:
    """Load a dataset by name (see :func:`list_datasets`); ``kwargs`` go to its loader
    (``download`` for the real ones; sizes and seed for ``synthetic``)."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(list_datasets())}")
    return _LOADERS[name](root, **kwargs)


# ---------------------------------------------------------------------------------------------
# The loader: whole split on the device, augmentation as batched tensor ops

class DeviceLoader:
    """Iterate over a split in batches built on ``device``.

    Each epoch's randomness (order, crop offsets, flips) is drawn on the CPU from
    ``(seed, epoch)`` and moved to the device once, so a batch costs no host sync, the same
    seed gives the same batches on CPU and GPU, and a resumed run replays any epoch exactly.

    Augmentation (``augment=True``) matches torchvision's ``RandomCrop(size, padding=pad)`` +
    ``RandomHorizontalFlip()``: the uint8 image is zero-padded (a zero pixel normalises to
    ``-mean/std``), cropped at offsets uniform in ``0..2·pad``, and flipped with p=0.5.
    ``rotations=True`` gives SSKD's input: one flip per image, then its rotations by 0, 90,
    180 and 270 degrees, each cropped independently; images are ``(4B, C, H, W)``,
    sample-major.

    Yields ``(images, labels, indices)``: float32 ``(B, C, H, W)`` normalised images, int64
    ``(B,)`` labels and int64 ``(B,)`` positions in the split. ``rank``/``world_size`` give
    each DDP process its share of a common permutation.
    """

    def __init__(self, split: Split, batch_size: int, device: str | torch.device = "cpu", *,
                 augment: bool = True, shuffle: bool | None = None, seed: int = 0,
                 drop_last: bool = False, pad: int = 4, rotations: bool = False,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.mean = torch.tensor(split.mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(split.std, device=self.device).view(1, -1, 1, 1) * 255
        self.batch_size, self.augment, self.seed = batch_size, augment, seed
        self.shuffle = augment if shuffle is None else shuffle
        self.drop_last, self.pad, self.rotations = drop_last, pad, rotations
        self.channels_last, self.rank, self.world_size = channels_last, rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.labels), self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        self.epoch += 1
        return self.iter_epoch(self.epoch)

    def iter_epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The batches of epoch ``epoch`` (a pure function of ``seed`` and ``epoch``)."""
        n = len(self.labels)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order[self.rank::self.world_size]
        copies = 4 if self.rotations else 1
        offsets = torch.randint(0, 2 * self.pad + 1, (n, copies, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        order, offsets, flips = (t.to(self.device) for t in (order, offsets, flips))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self._batch(idx, offsets[idx], flips[idx]), self.labels[idx], idx

    def _batch(self, idx: Tensor, offsets: Tensor, flips: Tensor) -> Tensor:
        x = self.images[idx]
        if self.rotations:
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
            x = torch.stack([x.rot90(k, dims=(2, 3)) for k in range(4)], 1).flatten(0, 1)
            x = crop(x, offsets.flatten(0, 1), self.pad) if self.augment else x
        elif self.augment:
            x = crop(x, offsets[:, 0], self.pad)
            x = torch.where(flips.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def crop(x: Tensor, offsets: Tensor, pad: int) -> Tensor:
    """Random crops with zero padding, one per image, as one gather.

    Args:
        x: ``(B, C, H, W)`` images (any dtype; padding value 0).
        offsets: ``(B, 2)`` int64 top/left offsets in ``0..2·pad`` into the padded image.
        pad: padding on each side, in pixels.

    Returns:
        ``(B, C, H, W)``: ``x_padded[b, :, dy:dy+H, dx:dx+W]`` for each image.
    """
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[bi, ci, rows, cols]
