"""kdlib's trainer beside a reference-style KD loop, on the same machine and workloads.

    python -m kdlib bench [--quick] [--device cpu|cuda] [--workloads NAME ...] [--modes NAME ...]
                          [--batches N ...] [--workers N] [--out DIR]
    make bench BENCH_ARGS="--quick"

For every workload (dataset, teacher -> student, KD with CE 0.1 + KD 0.9, T=4), batch size and
mode, it runs warm-up steps and then a fixed number of timed steps, and reports images/s,
seconds per 50k-image epoch (extrapolated from the timed steps), peak memory and the speed
ratio kdlib / reference at the same workload and batch (by wall-clock time, and on CPU also by
the CPU time of this process, which other load on the machine barely changes). On CUDA it
also reports the achieved TFLOP/s against a measured bf16 matmul peak. The table is printed last and the run is saved as
JSON in ``bench/results/<date>-<machine>.json``.

Modes: ``reference`` is the RepDistiller-style loop of ``bench/reference.py``; the others run
:func:`kdlib.train.distill_many` with the :class:`~kdlib.train.Options` the name spells
(``fp32``: float32 NCHW; ``cl``: channels_last; ``bf16``: bf16 autocast; ``compile``:
``torch.compile``; ``-xK``: K students sharing one teacher forward). kdlib is timed over its
second epoch, the first being the warm-up; the dataset is cut to exactly one epoch of the
timed steps, so both epochs have that many steps.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shlex
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import reference
from kdlib import data, methods
from kdlib.cost import PeakMemory, time_epoch
from kdlib.io import atomic_write_json
from kdlib.models import create_model
from kdlib.results import environment
from kdlib.train import RECIPES, Options, Student, resolve_device

EPOCH_IMAGES = 50_000     # a CIFAR-sized epoch, for the extrapolated seconds per epoch
TEST_IMAGES = 1           # kdlib evaluates after every epoch: keep that inside the timing negligible
GPU_IMAGES = 12_800       # timed images per mode on CUDA (200 steps at batch 64, 25 at 512)
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Workload:
    """KD of ``teacher`` into ``student`` on ``dataset``; ``cpu_images``: timed images per mode on CPU."""

    dataset: str
    teacher: str
    student: str
    cpu_images: int


# The slow resnet32x4 teacher gets few timed images on CPU, so that the whole default CPU run
# stays under 10 minutes; synthetic data has CIFAR-100's shape (3x32x32, 100 classes).
WORKLOADS = {
    "synthetic:resnet56-resnet20": Workload("synthetic", "resnet56", "resnet20", 256),
    "synthetic:resnet32x4-resnet8x4": Workload("synthetic", "resnet32x4", "resnet8x4", 64),
    "fashion_mnist:resnet56-resnet20": Workload("fashion_mnist", "resnet56", "resnet20", 256),
    "fashion_mnist:resnet32x4-resnet8x4": Workload("fashion_mnist", "resnet32x4", "resnet8x4", 64),
}


@dataclass(frozen=True)
class Mode:
    """How kdlib runs: :class:`~kdlib.train.Options` flags and the number of students."""

    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    students: int = 1


MODES: dict[str, Mode | None] = {
    "reference": None,
    "fp32": Mode(),
    "cl": Mode(channels_last=True),
    "bf16-cl": Mode(amp=True, channels_last=True),
    "bf16-cl-compile": Mode(amp=True, channels_last=True, compile=True),
    "bf16-cl-x4": Mode(amp=True, channels_last=True, students=4),
    "bf16-cl-x8": Mode(amp=True, channels_last=True, students=8),
    "bf16-cl-compile-x8": Mode(amp=True, channels_last=True, compile=True, students=8),
}
DEFAULT_MODES = {
    "cpu": ["reference", "fp32", "cl", "bf16-cl", "bf16-cl-x4", "bf16-cl-x8"],
    "cuda": ["reference", "fp32", "bf16-cl", "bf16-cl-compile", "bf16-cl-x4", "bf16-cl-x8", "bf16-cl-compile-x8"],
}
DEFAULT_BATCHES = {"cpu": [64, 256], "cuda": [64, 512]}
QUICK_BATCHES = [8, 16]


# ---------------------------------------------------------------------------------------------
# Measurements

def forward_flops(model: torch.nn.Module, dataset: data.Dataset) -> float:
    """FLOPs of one image's forward pass in eval mode (2 per multiply-add), by ``FlopCounterMode``."""
    x = torch.zeros(2, *dataset.train.images.shape[1:])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() / 2


def matmul_peak_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float:
    """Measured bf16 TFLOP/s of an ``n x n x n`` matmul: the card's practical peak."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def time_kdlib(workload: Workload, dataset: data.Dataset, batch: int, mode: Mode,
               device: torch.device) -> tuple[float, float]:
    """Wall-clock and CPU seconds of kdlib's second epoch of ``dataset`` (the first is the warm-up),
    by :func:`kdlib.cost.time_epoch`: it includes the epoch's set-up and its evaluation of the
    ``TEST_IMAGES`` test images."""
    teacher = create_model(workload.teacher, dataset.num_classes, dataset.in_channels)
    students = [Student(f"student{i}", create_model(workload.student, dataset.num_classes, dataset.in_channels),
                        methods.create("kd")) for i in range(mode.students)]
    options = Options(device=str(device), amp=mode.amp, channels_last=mode.channels_last, compile=mode.compile)
    return time_epoch(students, teacher, dataset, replace(RECIPES["crd"], batch_size=batch), options=options)


def workload_data(workload: Workload, n: int, loaded: dict[str, data.Dataset]) -> data.Dataset:
    """``n`` training images of the workload's dataset (CIFAR-shaped when synthetic) and a
    ``TEST_IMAGES``-image test split; real datasets come from ``loaded``."""
    if workload.dataset == "synthetic":
        return data.load("synthetic", num_classes=100, channels=3, train_size=n, test_size=TEST_IMAGES)
    return loaded[workload.dataset].subset(train=n, test=TEST_IMAGES)


def measure(name: str, dataset: data.Dataset, batch: int, steps: int, mode_name: str,
            device: torch.device, workers: int, flops: tuple[float, float]) -> dict:
    """One row of the table: ``steps`` timed steps of ``mode_name`` after ``steps`` warm-up steps."""
    workload, mode = WORKLOADS[name], MODES[mode_name]
    torch.manual_seed(0)
    with PeakMemory(device) as memory:
        if mode is None:
            teacher = create_model(workload.teacher, dataset.num_classes, dataset.in_channels)
            student = create_model(workload.student, dataset.num_classes, dataset.in_channels)
            seconds, cpu_seconds = reference.time_steps(dataset.train, teacher, student, batch_size=batch,
                                                        warmup_steps=steps, timed_steps=steps, device=device,
                                                        num_workers=workers)
        else:
            seconds, cpu_seconds = time_kdlib(workload, dataset, batch, mode, device)
    students = 1 if mode is None else mode.students
    images_per_s = steps * batch / seconds
    flop_per_image = flops[0] + 3 * flops[1] * students
    return {"workload": name, "dataset": workload.dataset, "teacher": workload.teacher,
            "student": workload.student, "batch": batch, "mode": mode_name, "students": students,
            "warmup_steps": steps, "timed_steps": steps, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "images_per_s": images_per_s,
            "student_images_per_s": students * images_per_s,
            "student_images_per_cpu_s": students * steps * batch / cpu_seconds,
            "epoch_s": EPOCH_IMAGES / (students * images_per_s), "peak_mb": memory.mb,
            "gflop_per_image": flop_per_image / 1e9, "tflops": flop_per_image * images_per_s / 1e12}


def add_ratios(rows: list[dict], peak_tflops: float | None) -> None:
    """``vs_reference``: student images/s over the reference's at the same workload and batch;
    ``vs_reference_cpu``: the same per CPU second of this process (robust to other processes
    on the machine; DataLoader workers not counted); ``pct_of_peak``: achieved TFLOP/s over the
    measured matmul peak (CUDA only)."""
    ref = {(r["workload"], r["batch"]): r for r in rows if r["mode"] == "reference"}
    for r in rows:
        base = ref.get((r["workload"], r["batch"]))
        r["vs_reference"] = r["student_images_per_s"] / base["images_per_s"] if base else None
        r["vs_reference_cpu"] = (r["student_images_per_cpu_s"] / base["student_images_per_cpu_s"]
                                 if base else None)
        r["pct_of_peak"] = 100 * r["tflops"] / peak_tflops if peak_tflops else None


# ---------------------------------------------------------------------------------------------
# Machine, table, record

def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """CPU model, cores, threads, GPU name, versions."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), **environment()}


def machine_slug(info: dict) -> str:
    """A file-name-safe name of the machine: the GPU's, else the CPU's with its core count."""
    name = info["gpu"] or f"{info['cpu']}-{info['cores']}cores"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table(rows: list[dict], gpu: bool) -> str:
    """The results as a Markdown table (columns explained in bench/README.md)."""
    head = ["workload", "batch", "mode", "K", "img/s", "student img/s", "s/epoch", "peak MB", "x ref"]
    head += ["TFLOP/s", "% peak"] if gpu else ["x ref (CPU s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r["workload"], r["batch"], r["mode"], r["students"], f"{r['images_per_s']:.0f}",
                 f"{r['student_images_per_s']:.0f}", f"{r['epoch_s']:.1f}", f"{r['peak_mb']:.0f}",
                 _ratio(r["vs_reference"])]
        cells += [f"{r['tflops']:.1f}", f"{r['pct_of_peak']:.1f}"] if gpu else [_ratio(r["vs_reference_cpu"])]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# ---------------------------------------------------------------------------------------------
# Command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kdlib bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"1 warm-up and 1 timed step per mode at batches {QUICK_BATCHES} (a smoke test)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda where available)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), metavar="NAME",
                   help=f"default: all of {', '.join(WORKLOADS)}")
    p.add_argument("--modes", nargs="+", default=None, metavar="NAME",
                   help=f"of {', '.join(MODES)} (default: cpu {' '.join(DEFAULT_MODES['cpu'])}; "
                        f"cuda {' '.join(DEFAULT_MODES['cuda'])})")
    p.add_argument("--batches", nargs="+", type=int, default=None, metavar="N",
                   help="batch sizes (default: cpu 64 256, cuda 64 512)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader workers of the reference loop (RepDistiller: 8; default: min(8, cores))")
    p.add_argument("--out", default=str(RESULTS), help="folder of the JSON record (default bench/results)")
    return p.parse_args(argv)


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children (the workers)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _check(kind: str, names: list[str], valid) -> None:
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark, print the table and return the path of the JSON record."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = resolve_device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    modes = args.modes or DEFAULT_MODES[device.type]
    batches = args.batches or (QUICK_BATCHES if args.quick else DEFAULT_BATCHES[device.type])
    _check("workload", args.workloads, WORKLOADS)
    _check("mode", modes, MODES)
    if min(batches) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batches}")

    load_before, t0, cpu0 = os.getloadavg(), time.perf_counter(), process_cpu_seconds()
    peak = matmul_peak_tflops(device) if device.type == "cuda" else None
    # The real datasets first: a missing one fails now, not after minutes of measurements.
    full = {name: data.load(name) for name in {WORKLOADS[w].dataset for w in args.workloads} - {"synthetic"}}
    rows = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        for batch in batches:
            images = GPU_IMAGES if device.type == "cuda" else workload.cpu_images
            steps = 1 if args.quick else max(1, images // batch)
            dataset = workload_data(workload, steps * batch, full)
            flops = tuple(forward_flops(create_model(arch, dataset.num_classes, dataset.in_channels), dataset)
                          for arch in (workload.teacher, workload.student))
            for mode in modes:
                row = measure(name, dataset, batch, steps, mode, device, args.workers, flops)
                rows.append(row)
                print(f"{name:36} batch {batch:4} {mode:20} {row['images_per_s']:8.1f} img/s "
                      f"x{row['students']} ({steps} timed steps, {row['seconds']:.2f} s)", flush=True)
    add_ratios(rows, peak)
    wall, cpu = time.perf_counter() - t0, process_cpu_seconds() - cpu0

    info = machine(device)
    record = {"date": datetime.now().isoformat(timespec="seconds"),
              "command": shlex.join(["python", "-m", "kdlib", "bench", *argv]),
              "device": str(device), "machine": info, "wall_s": wall, "cpu_s": cpu,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "bf16_matmul_peak_tflops": peak, "epoch_images": EPOCH_IMAGES, "rows": rows}
    out = Path(args.out) / f"{datetime.now():%Y-%m-%d}-{machine_slug(info)}.json"
    atomic_write_json(out, record)
    print()
    print(table(rows, gpu=peak is not None))
    print(f"\n{wall:.0f} s in all ({cpu:.0f} s of CPU time); load average before {load_before[0]:.2f}, "
          f"after {record['load_average_after'][0]:.2f}; saved {out}")
    return out


if __name__ == "__main__":
    main()
