"""Stability of ``convdoctor.bench``, and agreement with a plain timing loop.

For each trial, in one process: two consecutive ``bench`` runs of resnet18 (random
weights, eval, batch 1, CPU, fixed threads), then an independent loop that does the same
warm-up (10 calls) and times as many single calls with ``time.perf_counter`` under
``torch.inference_mode``. Acceptance (issue 6): the two bench medians within 5% of each
other, and within 5% of the loop's median. The relative difference is ``|a - b| / min(a, b)``.

Run: ``.venv/bin/python benchmarks/bench_stability.py [--threads 2] [--trials 3]``.
Prints a markdown table and writes it into docs/performance.md (section ``stability-<threads>t``).
Other processes on the machine move every figure: before each measurement the script waits
(up to 2 minutes) for the machine to be idle, and the load average is recorded.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from convdoctor.bench import bench
from convdoctor.capture.inputs import make_input
from convdoctor.capture.load import load_model

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _bench_fragment import machine_line, update_section, wait_quiet  # noqa: E402

WARMUP = 10
TOLERANCE = 0.05


def perf_counter_loop(model: torch.nn.Module, shape: tuple[int, ...], threads: int, n: int) -> list[float]:
    """The independent reference: warm-up, then ``n`` single calls timed with perf_counter (ms)."""
    x = make_input(shape)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(WARMUP):
                model(x)
            times = []
            for _ in range(n):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(before)
    return times


def rel_diff(a: float, b: float) -> float:
    """``|a - b| / min(a, b)``."""
    return abs(a - b) / min(a, b)


def trial(model: torch.nn.Module, spec: str, shape: tuple[int, ...], threads: int) -> list[tuple[str, dict]]:
    """Two bench runs and the loop; each as (label, figures)."""
    out = []
    for label in ("bench run 1", "bench run 2"):
        wait_quiet()
        row = bench(
            model, shape, threads=threads, warmup=WARMUP, cold_start=False, profile=False, probe=False, name=spec
        ).rows[0]
        out.append(
            (label, {"n": row.n_samples, "p50": row.p50_ms, "p90": row.p90_ms, "p99": row.p99_ms, "iqr": row.rel_iqr})
        )
    wait_quiet()
    loop = perf_counter_loop(model, shape, threads, out[0][1]["n"])
    q = statistics.quantiles(loop, n=100, method="inclusive")
    iqr = (q[74] - q[24]) / statistics.median(loop)
    out.append(
        ("perf_counter loop", {"n": len(loop), "p50": statistics.median(loop), "p90": q[89], "p99": q[98], "iqr": iqr})
    )
    return out


def main() -> int:
    """Run the trials, print the markdown, update the fragment; exit 1 if a trial fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()
    model = load_model(args.model).module.eval()
    shape = (1, 3, 224, 224)
    lines = [
        f"### Stability: {args.model}, batch 1, CPU, {args.threads} threads",
        "",
        f"Machine: {machine_line(args.threads)}.",
        "",
        "| trial | measurement | samples | p50 ms | p90 ms | p99 ms | IQR / p50 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for t in range(1, args.trials + 1):
        results = trial(model, args.model, shape, args.threads)
        for label, r in results:
            lines.append(
                f"| {t} | {label} | {r['n']} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['iqr']:.1%} |"
            )
        (_, a), (_, b), (_, loop) = results
        d_runs, d_loop = rel_diff(a["p50"], b["p50"]), rel_diff(a["p50"], loop["p50"])
        ok = d_runs <= TOLERANCE and d_loop <= TOLERANCE
        verdicts.append(ok)
        lines.append(
            f"| {t} | **run 1 vs run 2: {d_runs:.1%}; run 1 vs loop: {d_loop:.1%}** | | | | | "
            f"**{'pass' if ok else 'FAIL'}** (≤ {TOLERANCE:.0%}) |"
        )
    lines += [
        "",
        f"{sum(verdicts)} of {len(verdicts)} trials within {TOLERANCE:.0%}. Load average after: "
        f"{', '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}.",
    ]
    markdown = "\n".join(lines) + "\n"
    sys.stdout.write(markdown)
    if not args.no_write:
        update_section(f"stability-{args.threads}t", markdown)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
