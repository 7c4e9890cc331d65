"""Monitor overhead per training step: resnet18 adapted to 32x32 inputs, on CPU (or CUDA).

Method: copies of the same model (same initialisation, same optimizer settings) train
on the same random batches; one is watched by a ``Monitor`` at default settings
(``every=1``), one is not (and a third, below, by a monitor without histograms). The arms run in rotating blocks of ``--block``
steps (interleaved, so drift in machine load hits both equally), each block timed with
``torch.utils.benchmark.Timer.timeit`` (which synchronises CUDA). A block's time is the mean
of its steps, so the monitor's periodic host sync (every 25 steps) and its update-ratio
snapshot (every 10th sample) are included at their true frequency. We report the median
and the mean over blocks, the overhead ``with / without - 1`` of both, and the median over
rounds of each round's own ratio (adjacent blocks, robust to slow load drift). On a shared
machine the A/B difference is noisy, so the script also times the monitor directly: each
``mon.step`` call, plus the extra time ``optimizer.step`` takes in the watched arm (the
update-ratio post-hook) and the time spent in the monitor's forward hooks (per-layer
activation histograms, timed by wrapping each hook); ``overhead_direct`` is that cost over
the median unwatched step. A third arm runs the same monitor with ``histograms=False``, so
the histograms' own cost is measured in the same run (``histograms_cost_direct``,
``histograms_cost_paired_median``); ``--no-histograms`` turns them off in the watched arm too, and
``--writer`` adds a TensorBoard ``SummaryWriter`` (in a temporary directory), whose writes at
each sync are then part of ``mon.step``.

Run: ``python benchmarks/monitor_overhead.py [--steps 200] [--batch-size 32] [--threads 1]
[--no-histograms] [--writer]``.
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


def _time_forward_hooks(spent: list[float]) -> None:
    """Wrap every forward hook the monitor's histogram probe installs with a timer."""
    from convdoctor.monitor import histograms

    make = histograms.HistogramProbe._make

    def timed_make(self: object, path: str) -> object:
        hook = make(self, path)  # type: ignore[arg-type]

        def timed(module: object, args: object, output: object) -> None:
            t0 = time.perf_counter()
            hook(module, args, output)
            spent.append(time.perf_counter() - t0)

        return timed

    histograms.HistogramProbe._make = timed_make  # type: ignore[method-assign]


def run(
    steps: int, batch_size: int, block: int, device: str, every: int, histograms: bool = True, writer: bool = False
) -> dict[str, object]:
    """Time both arms; return raw block times (seconds per step) and the overhead."""
    import tempfile

    from convdoctor.monitor import Monitor

    hook_time: list[float] = []
    _time_forward_hooks(hook_time)
    summary = None
    if writer:
        from torch.utils.tensorboard import SummaryWriter

        summary = SummaryWriter(tempfile.mkdtemp(prefix="monitor-overhead-"))

    torch.manual_seed(0)
    base = resnet18_32x32().to(device)
    models = {"without": base, "with": copy.deepcopy(base), "no_histograms": copy.deepcopy(base)}
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
        monitors[arm] = (
            Monitor(model, num_classes=10, every=every, histograms=histograms and arm == "with", writer=summary)
            if arm != "without"
            else None
        )
        steps_fn[arm] = make_step(model, opt, batches, monitors[arm], spent[arm])
    for fn in steps_fn.values():  # warm-up: allocator, oneDNN/cuDNN kernels, first sync
        for _ in range(3):
            fn()  # type: ignore[operator]
    for arm_spent in spent.values():
        for v in arm_spent.values():
            v.clear()
    hook_time.clear()
    arms = list(models)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(max(1, steps // block)):
        for arm in arms[r % 3 :] + arms[: r % 3]:  # rotate the order: no arm always runs first
            m = tb.Timer(stmt="fn()", globals={"fn": steps_fn[arm]}).timeit(block)
            times[arm].append(m.mean)
    med = {a: statistics.median(t) for a, t in times.items()}
    paired = statistics.median(w / wo - 1.0 for w, wo in zip(times["with"], times["without"]))
    paired_hist = statistics.median(w / wo - 1.0 for w, wo in zip(times["with"], times["no_histograms"]))
    mean = {a: statistics.fmean(t) for a, t in times.items()}
    mon = monitors["with"]
    w, wn, wo = spent["with"], spent["no_histograms"], spent["without"]
    hooks = sum(hook_time) / len(w["opt"])  # forward-hook time per step of the watched arm
    direct = statistics.fmean(w["mon"]) + statistics.fmean(w["opt"]) - statistics.fmean(wo["opt"]) + hooks
    direct_nohist = statistics.fmean(wn["mon"]) + statistics.fmean(wn["opt"]) - statistics.fmean(wo["opt"])
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
        "forward_hooks_s_per_step": hooks,
        "mon_step_s_per_step": statistics.fmean(w["mon"]),
        "histograms": histograms,
        "writer": writer,
        "overhead_direct": direct / med["without"],
        "overhead_direct_no_histograms": direct_nohist / med["without"],
        "overhead_median_no_histograms": med["no_histograms"] / med["without"] - 1.0,
        # the histograms' own cost, measured in this run: the watched arm against the same
        # monitor with histograms=False (direct: what mon.step and the hooks take, A/B: step times)
        "histograms_cost_direct": (direct - direct_nohist) / med["without"],
        "histograms_cost_paired_median": paired_hist,
        "block_times": times,
        "findings": [f.code for f in mon.findings] if mon is not None else [],  # type: ignore
        "histogram_steps": [h["step"] for h in mon.history()["histograms"]["steps"]] if mon is not None else [],  # type: ignore
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
    p.add_argument("--no-histograms", action="store_true", help="Monitor(histograms=False)")
    p.add_argument("--writer", action="store_true", help="also write to a TensorBoard SummaryWriter")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.steps, args.batch_size, args.block, args.device, args.every, not args.no_histograms, args.writer)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
