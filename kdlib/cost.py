"""What training costs: seconds per epoch and peak memory (chapter 6, "Benchmark").

The benchmark (``bench/run.py``) and the benchmark chapter measure the same way: a run of two
epochs, timed over the second (the first pays for one-time set-up: allocations, kernel
selection, ``torch.compile``), inside :class:`PeakMemory`.
"""
from __future__ import annotations

import ctypes
import gc
import math
import resource
import threading
import time
from dataclasses import replace

import torch
from torch import nn

from .data import Dataset
from .train import Options, Recipe, Student, distill_many

try:
    import psutil
except ImportError:
    psutil = None
try:
    malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim  # glibc only
except (OSError, AttributeError):
    malloc_trim = None


class PeakMemory:
    """Peak memory used inside a ``with`` block, in MB (``self.mb``), above its level at the start.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: this process's resident set, sampled every
    5 ms by a thread (psutil); without psutil, the rise of ``ru_maxrss``, which is a lifetime
    peak (0 when an earlier block peaked higher). On glibc, free heap memory is handed back to
    the system first (``malloc_trim``), so that what earlier blocks freed does not hide this
    block's use. DataLoader worker processes are not counted.
    """

    def __init__(self, device: torch.device | str):
        self.device, self.mb = torch.device(device), math.nan

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if malloc_trim is not None:
            malloc_trim(0)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        elif psutil is not None:
            self.process = psutil.Process()
            self.start = self.peak = self.process.memory_info().rss
            self.done = threading.Event()
            self.sampler = threading.Thread(target=self._sample, daemon=True)
            self.sampler.start()
        else:
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def _sample(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif psutil is not None:
            self.done.set()
            self.sampler.join()
            peak = max(self.peak, self.process.memory_info().rss)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mb = (peak - self.start) / 2**20


def time_epoch(students: list[Student], teacher: nn.Module | None, dataset: Dataset, recipe: Recipe, *,
               options: Options | None = None) -> tuple[float, float]:
    """Wall-clock and CPU seconds of the second of two epochs of ``distill_many`` on ``dataset``.

    Measured between the ends of the two epochs (``Options.callbacks``, after a CUDA
    synchronize), so it holds one epoch's steps for all ``students`` (one teacher forward per
    step), the epoch's set-up and its evaluation of the test split (keep that split small).
    Init stages (AB, FT, FSP, SSKD's teacher head) run before the first epoch and are not
    counted. The students are trained: pass fresh ones.
    """
    options = options or Options()
    device = torch.device(options.device)
    ends = []

    def epoch_end(epoch: int, metrics: dict) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ends.append((time.perf_counter(), time.process_time()))

    distill_many(students, teacher, dataset, replace(recipe, epochs=2),
                 options=replace(options, progress=False, checkpoint=None, callbacks=[*options.callbacks, epoch_end]))
    return ends[1][0] - ends[0][0], ends[1][1] - ends[0][1]
