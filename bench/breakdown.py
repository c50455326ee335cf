"""Where one KD step's time goes: the parts of kdlib's step beside the reference loop's whole step.

    python bench/breakdown.py [--device cpu] [--batch 64] [--steps 20] [--pair resnet56 resnet20]

On Fashion-MNIST-shaped input (1x32x32, 10 classes) it times, in ms per step (median of
``--steps`` after as many warm-up steps), each part of a KD step in fp32 NCHW and in
bf16 autocast + channels_last: the loader's batch (DeviceLoader: index, crop, flip,
normalise), the teacher's forward (inference mode), the student's forward + CE/KD loss +
backward, and the SGD update; then the reference loop's whole step (``bench/reference.py``,
DataLoader workers included). The sum of kdlib's parts in a precision is the floor of its step
there: the ratio ``reference / parts`` bounds what any loop can gain at that precision.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from bench import reference
from kdlib import data, losses
from kdlib.models import create_model


def median_ms(fn, steps: int, sync) -> float:
    """Median wall-clock ms of ``fn()`` over ``steps`` calls after ``steps`` warm-up calls."""
    times = []
    for i in range(2 * steps):
        t0 = time.perf_counter()
        fn()
        sync()
        if i >= steps:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def parts(teacher_arch: str, student_arch: str, split: data.Split, batch: int, steps: int, device: torch.device,
          bf16: bool) -> dict[str, float]:
    """ms per step of each part of kdlib's KD step in one precision/layout."""
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    autocast = (lambda: torch.autocast(device.type, torch.bfloat16)) if bf16 else nullcontext
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    teacher = create_model(teacher_arch, 10, 1).to(device, memory_format=fmt).eval()
    student = create_model(student_arch, 10, 1).to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = data.DeviceLoader(split, batch, str(device), seed=0)
    batches = iter(loader.iter_epoch(1))
    images, labels, _ = next(batches)
    images = images.contiguous(memory_format=fmt)
    with torch.inference_mode(), autocast():
        logits_t = teacher(images).float()

    def teacher_forward():
        with torch.inference_mode(), autocast():
            teacher(images)

    def student_step():
        with autocast():
            z = student(images)
            loss = 0.1 * F.cross_entropy(z, labels) + 0.9 * losses.kd(z, logits_t, T=4.0)
        loss.backward()

    def update():
        opt.step()
        opt.zero_grad(set_to_none=False)

    def next_batch():
        nonlocal batches
        try:
            next(batches)
        except StopIteration:
            batches = iter(loader.iter_epoch(2))

    student_step()  # gradients exist before the first timed update
    return {"loader batch": median_ms(next_batch, steps, sync), "teacher forward": median_ms(teacher_forward, steps, sync),
            "student fwd+loss+bwd": median_ms(student_step, steps, sync), "SGD update": median_ms(update, steps, sync)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--pair", nargs=2, default=["resnet56", "resnet20"])
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    device = torch.device(args.device)
    split = data.load("synthetic", num_classes=10, channels=1, train_size=args.batch * (2 * args.steps + 2),
                      test_size=1).train
    print(f"KD {args.pair[0]} -> {args.pair[1]}, 1x32x32, batch {args.batch}, {device}, "
          f"{torch.get_num_threads()} threads; ms per step (median of {args.steps})")
    table = {name: parts(*args.pair, split, args.batch, args.steps, device, bf16)
             for name, bf16 in (("fp32 NCHW", False), ("bf16 channels_last", True))}
    torch.manual_seed(0)
    seconds, _ = reference.time_steps(split, create_model(args.pair[0], 10, 1), create_model(args.pair[1], 10, 1),
                                      batch_size=args.batch, warmup_steps=args.steps, timed_steps=args.steps,
                                      device=device, num_workers=args.workers)
    ref_ms = seconds / args.steps * 1e3
    print(f"| part | {' | '.join(table)} |\n|---|{'---|' * len(table)}")
    for part in next(iter(table.values())):
        print(f"| {part} | {' | '.join(f'{t[part]:.1f}' for t in table.values())} |")
    print(f"| sum of parts | {' | '.join(f'{sum(t.values()):.1f}' for t in table.values())} |")
    print(f"| reference loop, whole step ({args.workers} workers) | {ref_ms:.1f} (fp32 NCHW) |")
    for name, t in table.items():
        print(f"bound on kdlib / reference at {name}: {ref_ms / sum(t.values()):.2f}x "
              f"(teacher forward {t['teacher forward'] / sum(t.values()):.0%} of the parts)")


if __name__ == "__main__":
    main()
