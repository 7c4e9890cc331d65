"""MACs ratio vs latency ratio: resnet18, mobilenet_v2, mobilenet_v3_small, efficientnet_b0.

``convdoctor.compare`` on CPU with fixed threads at batch 1 and 32 (random weights, eval,
``torch.inference_mode``, 10 warm-up calls, then at least ``--min-samples`` single-call
samples or ``--max-run-time`` seconds per row), cold start in a fresh process per row; the
machine peaks are re-measured first.
Ratios are to resnet18. "per-MAC gap" is the p50 ratio over the MACs ratio: 1.0 means
latency scales with MACs; 3.0 means each MAC costs three times what it costs in resnet18.

Run: ``.venv/bin/python benchmarks/bench_compare.py [--threads 2]``. Prints a markdown
table and writes it into docs/performance.md (section ``compare-<threads>t``); ``--json FILE`` also
saves the full report. Other processes on the machine move every figure: the load
average is recorded, each row waits (up to 2 minutes) for an idle machine before it starts,
and BENCH_NOISY rows are marked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convdoctor.bench import compare, machine_peaks
from convdoctor.report import render
from convdoctor.results.bench import BenchReport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_fragment import machine_line, update_section, wait_quiet  # noqa: E402

MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0")


def table(report: BenchReport) -> list[str]:
    """One markdown line per (model, batch)."""
    noisy = {f.where for f in report.findings if f.code == "BENCH_NOISY"}
    lines = [
        "| model | batch | GMACs | params M | p50 ms | p99 ms | samples/s | cold start ms | MACs x | p50 x | "
        "per-MAC gap | GMAC/s | memory-bound time | samples |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ratio in sorted(report.ratios(), key=lambda r: (r.batch_size, MODELS.index(r.model))):
        r = report.row(ratio.model, ratio.batch_size)
        assert r is not None and r.macs is not None and r.params is not None and ratio.macs_ratio is not None
        cold = f"{r.cold_start_ms:.0f}" if r.cold_start_ms is not None else "-"
        share = f"{r.memory_bound_share:.0%}" if r.memory_bound_share is not None else "-"
        flag = " (noisy)" if f"{r.model}@{r.batch_size}" in noisy else ""
        lines.append(
            f"| {r.model} | {r.batch_size} | {r.macs / 1e9:.3f} | {r.params / 1e6:.2f} | {r.p50_ms:.1f}{flag} | "
            f"{r.p99_ms:.1f} | {r.throughput:.1f} | {cold} | {ratio.macs_ratio:.2f} | {ratio.p50_ratio:.2f} | "
            f"{ratio.p50_ratio / ratio.macs_ratio:.1f} | {r.gmacs_per_s:.1f} | {share} | {r.n_samples} |"
        )
    return lines


def findings_lines(report: BenchReport) -> list[str]:
    """What the numbers say, one bullet per model and batch size, straight from the ratios."""
    out = []
    for ratio in report.ratios():
        if ratio.model == report.models[0] or ratio.macs_ratio is None:
            continue
        out.append(
            f"- batch {ratio.batch_size}: {ratio.model} does {ratio.macs_ratio:.2f}x the MACs of "
            f"{report.models[0]} and takes {ratio.p50_ratio:.2f}x its p50 "
            f"({ratio.p50_ratio / ratio.macs_ratio:.1f}x the time per MAC)."
        )
    return out


def main() -> int:
    """Run the comparison, print the markdown, update the fragment."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--min-samples", type=int, default=50)
    parser.add_argument("--max-run-time", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None, help="also save the full report as JSON")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()
    wait_quiet()
    machine_peaks("cpu", args.threads, refresh=True)  # re-measure the roofline, in a quiet window
    report = compare(
        {name: f"torchvision:{name}" for name in MODELS},
        "1x3x224x224",
        batch_sizes=args.batch_sizes,
        threads=args.threads,
        min_samples=args.min_samples,
        max_run_time=args.max_run_time,
        progress=lambda desc, done, total: wait_quiet(),
    )  # each row starts in a quiet window
    m = report.machine
    lines = [
        f"### MACs vs latency: {', '.join(MODELS)} (CPU, {args.threads} threads)",
        "",
        f"Machine: {machine_line(args.threads)}. Probe: matmul {m.get('gmacs_per_s', 0):.1f} GMAC/s, "
        f"copy {m.get('gbytes_per_s', 0):.1f} GB/s, ridge {m.get('ridge_macs_per_byte', 0):.1f} MAC/byte.",
        "",
        *table(report),
        "",
        *findings_lines(report),
    ]
    markdown = "\n".join(lines) + "\n"
    sys.stdout.write(markdown)
    if args.json is not None:
        args.json.write_text(render(report, "json"))
    if not args.no_write:
        update_section(f"compare-{args.threads}t", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
