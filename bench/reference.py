"""A reference-style KD training loop, written after RepDistiller's ``train_distill`` (KD only).

What makes it "reference-style" is the loop, not the maths: the loss is kdlib's own
(:func:`kdlib.losses.kd`, CE 0.1 + KD 0.9, T=4), so a benchmark that puts this loop beside
kdlib's trainer measures only the difference between the two ways of running the same step.

As in RepDistiller:

- a torch ``DataLoader`` (``shuffle``, no ``pin_memory``, ``drop_last=False``) over a dataset
  that returns PIL images, transformed one sample at a time in the workers by
  ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize``;
- float32, NCHW; on CUDA a plain ``.cuda()`` copy per batch and ``cudnn.benchmark = True``;
- each step: the student's forward, the teacher's forward under ``no_grad`` (teacher in eval
  mode), CE + KD, top-1/top-5 accuracy, ``loss.item()`` (a host sync every step), SGD with
  momentum 0.9 and weight decay 5e-4.

Not replicated: the progress print every 100 steps, the per-epoch evaluation and checkpoints.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from kdlib import losses
from kdlib.compat import import_torchvision
from kdlib.data import Split


class PILDataset(torch.utils.data.Dataset):
    """A split served like torchvision's CIFAR100: ``(transform(PIL image), label, index)``.

    The images are kept as one ``(N, H, W, C)`` uint8 array, and each sample becomes a PIL
    image in ``__getitem__`` (``"RGB"`` for 3 channels, ``"L"`` for 1), as torchvision does.
    """

    def __init__(self, split: Split, transform):
        self.images = np.ascontiguousarray(split.images.permute(0, 2, 3, 1).numpy())
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        image = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        return self.transform(image), self.labels[i], i


def train_transform(split: Split):
    """RepDistiller's CIFAR-100 training transform, with the split's normalisation constants."""
    T = import_torchvision().transforms
    size = split.images.shape[-1]
    return T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(split.mean, split.std)])


def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[torch.Tensor]:
    """Top-k accuracies in % (RepDistiller's ``helper/util.py::accuracy``), as 1-element tensors."""
    maxk = max(topk)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand(maxk, -1))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / target.size(0)) for k in topk]


class AverageMeter:
    """Running sum and average (RepDistiller's meter; tensors stay tensors)."""

    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value, n: int = 1) -> None:
        self.sum += value * n
        self.count += n


def time_steps(split: Split, teacher: nn.Module, student: nn.Module, *, batch_size: int, warmup_steps: int,
               timed_steps: int, device: str | torch.device = "cpu", num_workers: int = 2,
               lr: float = 0.05) -> tuple[float, float]:
    """Wall-clock and CPU seconds of this process for ``timed_steps`` KD steps after ``warmup_steps``.

    One loader iterator serves both phases (a sampler drawing as many shuffled passes as
    needed), so the workers start once, before the warm-up: RepDistiller pays that start-up
    once per 782-step epoch, where it is negligible.
    """
    if timed_steps < 1:
        raise ValueError(f"timed_steps must be >= 1, got {timed_steps}")
    device = torch.device(device)
    dataset = PILDataset(split, train_transform(split))
    sampler = RandomSampler(dataset, num_samples=(warmup_steps + timed_steps) * batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    teacher.to(device).eval()
    student.to(device).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    meters = {k: AverageMeter() for k in ("loss", "top1", "top5")}
    benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        batches = iter(loader)
        for step in range(warmup_steps + timed_steps):
            if step == warmup_steps:
                start, start_cpu = time.perf_counter(), time.process_time()
            images, target, _ = next(batches)
            images = images.float().to(device)
            target = target.to(device)
            logit_s = student.forward_features(images).logits
            with torch.no_grad():
                logit_t = teacher.forward_features(images).logits
            loss = 0.1 * F.cross_entropy(logit_s, target) + 0.9 * losses.kd(logit_s, logit_t, T=4.0)
            acc1, acc5 = accuracy(logit_s, target, topk=(1, 5))
            meters["loss"].update(loss.item(), images.size(0))
            meters["top1"].update(acc1[0], images.size(0))
            meters["top5"].update(acc5[0], images.size(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, time.process_time() - start_cpu
    finally:
        torch.backends.cudnn.benchmark = benchmark
