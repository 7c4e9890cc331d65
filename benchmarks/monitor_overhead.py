"""Monitor overhead per training step: resnet18 adapted to 32x32 inputs, on CPU (or CUDA).

Method: two copies of the same model (same initialisation, same optimizer settings) train
on the same random batches; one is watched by a ``Monitor`` at default settings
(``every=1``), the other is not. The two arms run in alternating blocks of ``--block``
steps (interleaved, so drift in machine load hits both equally), each block timed with
``torch.utils.benchmark.Timer.timeit`` (which synchronises CUDA). A block's time is the mean
of its steps, so the monitor's periodic host sync (every 25 steps) and its update-ratio
snapshot (every 10th sample) are included at their true frequency. We report the median
and the mean over blocks, the overhead ``with / without - 1`` of both, and the median over
rounds of each round's own ratio (adjacent blocks, robust to slow load drift). On a shared
machine the A/B difference is noisy, so the script also times the monitor directly: each
``mon.step`` call, plus the extra time ``optimizer.step`` takes in the watched arm (the
update-ratio post-hook); ``overhead_direct`` is that cost over the median unwatched step.

Run: ``python benchmarks/monitor_overhead.py [--steps 200] [--batch-size 32] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time

import torch
import torch.utils.benchmark as tb
from torch import nn
from torch.nn import functional as F


def resnet18_32x32() -> nn.Module:
    """torchvision's resnet18 for 32x32 inputs: 3x3 stride-1 stem, no max-pool (the CIFAR variant)."""
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def make_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    mon: object | None,
    spent: dict[str, list[float]],
) -> object:
    """A closure running one training step on the next batch (cycling).

    ``spent["mon"]`` collects the wall time of each ``mon.step`` call and ``spent["opt"]`` that
    of each ``optimizer.step`` (which runs the monitor's update-ratio post-hook in the watched
    arm): the direct cost, immune to the load on the machine between the two arms.
    """
    state = {"i": 0}

    def step() -> None:
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if mon is not None:
            t0 = time.perf_counter()
            mon.step(loss=loss, outputs=out, targets=y, optimizer=opt)  # type: ignore[attr-defined]
            spent["mon"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        opt.step()
        spent["opt"].append(time.perf_counter() - t0)

    return step


def run(steps: int, batch_size: int, block: int, device: str, every: int) -> dict[str, object]:
    """Time both arms; return raw block times (seconds per step) and the overhead."""
    from convdoctor.monitor import Monitor

    torch.manual_seed(0)
    base = resnet18_32x32().to(device)
    models = {"without": base, "with": copy.deepcopy(base)}
    gen = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(batch_size, 3, 32, 32, generator=gen).to(device),
            torch.randint(0, 10, (batch_size,), generator=gen).to(device),
        )
        for _ in range(8)
    ]
    steps_fn, monitors = {}, {}
    spent: dict[str, dict[str, list[float]]] = {arm: {"mon": [], "opt": []} for arm in models}
    for arm, model in models.items():
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        monitors[arm] = Monitor(model, num_classes=10, every=every) if arm == "with" else None
        steps_fn[arm] = make_step(model, opt, batches, monitors[arm], spent[arm])
    for fn in steps_fn.values():  # warm-up: allocator, oneDNN/cuDNN kernels, first sync
        for _ in range(3):
            fn()  # type: ignore[operator]
    for arm_spent in spent.values():
        for v in arm_spent.values():
            v.clear()
    times: dict[str, list[float]] = {"without": [], "with": []}
    for r in range(max(1, steps // block)):
        for arm in ("without", "with") if r % 2 == 0 else ("with", "without"):
            m = tb.Timer(stmt="fn()", globals={"fn": steps_fn[arm]}).timeit(block)
            times[arm].append(m.mean)
    med = {a: statistics.median(t) for a, t in times.items()}
    paired = statistics.median(w / wo - 1.0 for w, wo in zip(times["with"], times["without"]))
    mean = {a: statistics.fmean(t) for a, t in times.items()}
    mon = monitors["with"]
    w, wo = spent["with"], spent["without"]
    direct = statistics.fmean(w["mon"]) + statistics.fmean(w["opt"]) - statistics.fmean(wo["opt"])
    return {
        "device": device,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "every": every,
        "steps_per_arm": block * len(times["with"]),
        "block": block,
        "median_s_per_step": med,
        "mean_s_per_step": mean,
        "overhead_median": med["with"] / med["without"] - 1.0,
        "overhead_mean": mean["with"] / mean["without"] - 1.0,
        "overhead_paired_median": paired,
        "monitor_s_per_step": direct,
        "overhead_direct": direct / med["without"],
        "block_times": times,
        "findings": [f.code for f in mon.findings] if mon is not None else [],  # type: ignore
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print one JSON document."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="timed steps per arm")
    p.add_argument("--block", type=int, default=5, help="steps per timed block (arms alternate per block)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--every", type=int, default=1, help="Monitor(every=...) (default: 1, the default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.steps, args.batch_size, args.block, args.device, args.every)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
