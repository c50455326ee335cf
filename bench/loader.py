"""DeviceLoader throughput: images/s for one augmented Fashion-MNIST training epoch.

    python bench/loader.py [--device cpu] [--batch-sizes 64 128]
"""
from __future__ import annotations

import argparse
import time

import torch

from kdlib import data


def epoch_rate(split, batch_size: int, device: str, repeats: int = 3) -> float:
    """Best of ``repeats`` epochs, in images/s (the loader's work only: index, crop, flip, normalise)."""
    loader = data.DeviceLoader(split, batch_size, device, seed=0)
    best = 0.0
    for epoch in range(1, repeats + 1):
        t0 = time.perf_counter()
        n = 0
        for images, labels, _ in loader.iter_epoch(epoch):
            n += len(labels)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    split = data.load("fashion_mnist").train
    print(f"Fashion-MNIST train ({len(split)} images, 1x32x32), device {args.device}, "
          f"{torch.get_num_threads()} threads")
    for bs in args.batch_sizes:
        print(f"batch {bs:4d}: {epoch_rate(split, bs, args.device):10.0f} images/s")


if __name__ == "__main__":
    main()
