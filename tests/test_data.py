"""Datasets and the DeviceLoader: real Fashion-MNIST, CIFAR-format files, augmentation law."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from kdlib import data
from kdlib.data import DeviceLoader, crop

FASHION_AVAILABLE = all((data.FASHION_DEBIAN / (s + ".gz")).is_file() for s in data.FASHION_FILES)
needs_fashion = pytest.mark.skipif(not FASHION_AVAILABLE, reason="Debian's dataset-fashion-mnist is not installed")


@pytest.fixture(scope="module")
def fashion():
    return data.load("fashion_mnist")


# ---- Fashion-MNIST (real data) -------------------------------------------------------------

@needs_fashion
def test_fashion_mnist_shapes_counts_balance(fashion):
    assert fashion.train.images.shape == (60000, 1, 32, 32) and fashion.train.images.dtype == torch.uint8
    assert fashion.test.images.shape == (10000, 1, 32, 32) and fashion.test.labels.dtype == torch.int64
    assert fashion.num_classes == 10 and fashion.classes[9] == "Ankle boot"
    assert fashion.train.labels.bincount().tolist() == [6000] * 10
    assert fashion.test.labels.bincount().tolist() == [1000] * 10


@needs_fashion
def test_fashion_mnist_padding_and_known_statistics(fashion):
    x = fashion.train.images
    border = torch.cat([x[..., :2, :].flatten(), x[..., -2:, :].flatten(), x[..., :, :2].flatten()])
    assert border.max() == 0  # zero-padded by 2, as LeNet did
    inner = x[..., 2:30, 2:30].float() / 255
    assert inner.mean().item() == pytest.approx(0.2860, abs=5e-4)  # published Fashion-MNIST statistics
    assert inner.std().item() == pytest.approx(0.3530, abs=5e-4)


@needs_fashion
def test_class_balanced_subset(fashion):
    sub = fashion.subset(train=1000, test=205, seed=3)
    assert sub.train.labels.bincount().tolist() == [100] * 10
    assert sorted(sub.test.labels.bincount().tolist()) == [20] * 5 + [21] * 5
    again = fashion.subset(train=1000, seed=3)
    assert torch.equal(sub.train.images, again.train.images)
    assert not torch.equal(sub.train.images, fashion.subset(train=1000, seed=4).train.images)


def test_fashion_corrupt_file_is_named(tmp_path):
    for stem in data.FASHION_FILES:
        (tmp_path / (stem + ".gz")).write_bytes(gzip.compress(b"\0\0\x08\x01" + (3).to_bytes(4, "big") + b"abc"))
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.load_fashion_mnist(tmp_path, download=False)


def test_missing_data_names_every_place_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_DATA", str(tmp_path / "cache"))
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load("cifar100", tmp_path / "root", download=False)
    msg = str(e.value)
    assert str(tmp_path / "root" / "cifar100" / "cifar-100-python") in msg
    assert str(tmp_path / "cache") in msg and "cifar-100-python.tar.gz" in msg


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_DEBIAN", tmp_path / "none")
    monkeypatch.setenv("KDLIB_DATA", str(tmp_path / "cache"))
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", tmp_path, download=False)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10, cifar100, fashion_mnist, synthetic"):
        data.load("imagenet")


def test_idx_parser_rejects_bad_files():
    with pytest.raises(ValueError, match="magic"):
        data.parse_idx(b"PK\x03\x04")
    header = b"\0\0\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28))
    with pytest.raises(ValueError, match="truncated"):
        data.parse_idx(header + bytes(100))
    assert data.parse_idx(header + bytes(2 * 28 * 28)).shape == (2, 28, 28)


# ---- CIFAR: generated files in exactly the official format ---------------------------------

def _write_cifar100(folder, n_train=50, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        d = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} batch",
             "fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": rng.integers(0, 20, n).tolist(),
             "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return rng


def test_cifar100_reader_on_generated_official_format(tmp_path):
    _write_cifar100(tmp_path / "cifar-100-python")
    ds = data.load("cifar100", tmp_path, download=False)
    raw = pickle.loads((tmp_path / "cifar-100-python" / "train").read_bytes())
    assert ds.train.images.shape == (50, 3, 32, 32) and ds.test.images.shape == (20, 3, 32, 32)
    assert ds.num_classes == 100 and ds.classes[7] == "fine7"
    assert ds.train.labels.tolist() == raw["fine_labels"]
    # CIFAR rows are channel-major: 1024 red, 1024 green, 1024 blue values, each row-major.
    assert ds.train.images[3, 1, 2, 5].item() == raw["data"][3, 1024 + 2 * 32 + 5]
    assert ds.mean == (0.5071, 0.4867, 0.4408)


def test_cifar10_reader_on_generated_official_format(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, 8).tolist(),
             "batch_label": name, "filenames": [f"{i}.png" for i in range(8)]}
        (folder / name).write_bytes(pickle.dumps(d))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    ds = data.load("cifar10", tmp_path, download=False)
    assert len(ds.train) == 40 and len(ds.test) == 8 and ds.classes[2] == "c"


def test_cifar_corrupt_pickle_and_wrong_archive(tmp_path):
    _write_cifar100(tmp_path / "cifar-100-python")
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="corrupt or not a CIFAR pickle"):
        data.load("cifar100", tmp_path, download=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "cifar-100-python.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match="MD5"):
        data.load("cifar100", other, download=False)


# ---- synthetic ---------------------------------------------------------------------------

def test_synthetic_is_seeded_and_shaped():
    a = data.load("synthetic", num_classes=5, train_size=100, test_size=30, channels=1, size=16, seed=2)
    b = data.load("synthetic", num_classes=5, train_size=100, test_size=30, channels=1, size=16, seed=2)
    assert a.train.images.shape == (100, 1, 16, 16) and a.num_classes == 5
    assert torch.equal(a.train.images, b.train.images)
    assert a.train.labels.bincount().tolist() == [20] * 5


# ---- DeviceLoader ---------------------------------------------------------------------------

def _coord_split(n=1, size=32):
    """Images whose channel 0 holds row+1 and channel 1 col+1, so a crop reveals its offsets."""
    r = torch.arange(1, size + 1, dtype=torch.uint8)
    img = torch.stack([r.view(-1, 1).expand(size, size), r.view(1, -1).expand(size, size)])
    return data.Split(img.expand(n, 2, size, size).clone(), torch.zeros(n, dtype=torch.int64), (0.0, 0.0), (1 / 255,) * 2)


def _offsets_and_flip(x):
    """Recover (dy, dx, flipped) from a crop of a coordinate image (pad 4)."""
    rows, cols = x[0], x[1]
    r, c = torch.nonzero(rows > 0)[0].tolist()
    dy = int(rows[r, c]) - 1 - r + 4
    inside = torch.nonzero(cols[r] > 0).flatten()
    flipped = bool(cols[r, inside[-1]] < cols[r, inside[0]])
    c0 = inside[-1] if flipped else inside[0]
    dx = int(cols[r, c0]) - 1 - (31 - c0 if flipped else c0) + 4
    return dy, int(dx), flipped


def test_crop_equals_slicing_the_padded_image():
    x = torch.randint(0, 256, (3, 2, 32, 32), dtype=torch.uint8)
    offsets = torch.tensor([[0, 0], [8, 3], [4, 8]])
    out = crop(x, offsets, 4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[b], padded[b, :, dy:dy + 32, dx:dx + 32])


def test_augmentation_law_is_torchvisions():
    """Offsets uniform on 0..8 x 0..8 and flip with p=0.5, independent: chi-square on 162 cells."""
    n = 16200
    loader = DeviceLoader(_coord_split(n), batch_size=4096, seed=0)
    counts = torch.zeros(9, 9, 2)
    for x, _, _ in loader:
        for img in x.round().to(torch.int64):
            dy, dx, f = _offsets_and_flip(img)
            counts[dy, dx, int(f)] += 1
    expected = n / counts.numel()
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 230  # df=161: P(chi2 > 230) < 0.001 under the uniform law


def test_augmentation_matches_torchvision_transforms():
    """For the same offsets and flip, torchvision's RandomCrop(32, 4) + flip gives our crop."""
    from kdlib.compat import import_torchvision
    tv = import_torchvision()
    TF = tv.transforms.functional
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    for dy, dx in [(0, 0), (2, 7), (8, 8)]:
        ours = crop(x, torch.tensor([[dy, dx]]), 4)[0]
        theirs = TF.crop(TF.pad(x[0], 4, fill=0), dy, dx, 32, 32)
        assert torch.equal(ours, theirs) and torch.equal(ours.flip(2), TF.hflip(theirs))


def test_loader_is_deterministic_and_reshuffles_each_epoch():
    split = data.load("synthetic", train_size=64).train
    a = [b for b in DeviceLoader(split, 16, seed=5).iter_epoch(1)]
    b = [b for b in DeviceLoader(split, 16, seed=5).iter_epoch(1)]
    c = [b for b in DeviceLoader(split, 16, seed=5).iter_epoch(2)]
    assert all(torch.equal(x1, x2) and torch.equal(i1, i2) for (x1, _, i1), (x2, _, i2) in zip(a, b))
    assert not torch.equal(a[0][2], c[0][2])
    loader = DeviceLoader(split, 16, seed=5)
    first, second = [i for _, _, i in loader], [i for _, _, i in loader]
    assert torch.equal(first[0], a[0][2]) and torch.equal(second[0], c[0][2])


def test_index_bookkeeping_and_drop_last():
    split = data.load("synthetic", train_size=70).train
    loader = DeviceLoader(split, 16, augment=False, shuffle=True, seed=0)
    seen = []
    for x, y, idx in loader:
        assert torch.equal(y, split.labels[idx])
        expected = (split.images[idx].float() - 0.5 * 255) / (0.25 * 255)
        torch.testing.assert_close(x, expected)
        seen.append(idx)
    assert len(loader) == 5 and sorted(torch.cat(seen).tolist()) == list(range(70))
    assert len(seen[-1]) == 6
    dl = DeviceLoader(split, 16, drop_last=True)
    assert len(dl) == 4 and all(len(i) == 16 for _, _, i in dl)


def test_zero_padding_normalises_to_minus_mean_over_std():
    split = data.Split(torch.full((20, 1, 32, 32), 200, dtype=torch.uint8), torch.zeros(20, dtype=torch.int64), (0.3,), (0.2,))
    x = next(iter(DeviceLoader(split, 20, seed=0)))[0]
    assert x.min().item() == pytest.approx(-0.3 / 0.2, rel=1e-5)  # the padded border
    assert x.max().item() == pytest.approx((200 / 255 - 0.3) / 0.2, rel=1e-5)


def test_shards_partition_the_epoch():
    split = data.load("synthetic", train_size=50).train
    shards = [torch.cat([i for _, _, i in DeviceLoader(split, 8, seed=1, rank=r, world_size=3).iter_epoch(1)])
              for r in range(3)]
    allidx = torch.cat(shards)
    assert sorted(allidx.tolist()) == list(range(50))


def test_rotated_copies_for_sskd():
    split = _coord_split(3)
    x, y, idx = next(iter(DeviceLoader(split, 3, augment=False, rotations=True, seed=0)))
    assert x.shape == (12, 2, 32, 32) and y.shape == (3,)
    base = split.images[0].float() * 255 / 255  # mean 0, std 1/255 -> values unchanged
    views = x.view(3, 4, 2, 32, 32)[0]
    flipped = torch.equal(views[0], base.flip(2))
    ref = base.flip(2) if flipped else base
    for k in range(4):
        assert torch.equal(views[k], ref.rot90(k, dims=(1, 2)))


def test_rotated_copies_are_cropped_independently():
    x, _, _ = next(iter(DeviceLoader(_coord_split(64), 64, rotations=True, seed=0)))
    views = x.round().to(torch.int64).view(64, 4, 2, 32, 32)
    # un-rotate each copy, then read its crop offsets: the four copies of an image differ.
    distinct = 0
    for v in views:
        offs = {_offsets_and_flip(v[k].rot90(-k, dims=(1, 2)))[:2] for k in range(4)}
        distinct += len(offs) > 1
    assert distinct > 55
