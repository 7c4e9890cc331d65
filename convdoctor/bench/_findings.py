"""Bench findings: pure functions of the measured rows."""

from __future__ import annotations

from ..findings import Finding, make_finding
from ..results.bench import BenchReport, BenchRow
from .timing import NOISY_REL_IQR

#: First inference at or above this multiple of the warm p50 raises COLD_START_SLOW. Three
#: times the steady latency is where a p99 target sized on warm figures breaks for every
#: request that lands on a freshly (re)started replica.
COLD_START_FACTOR = 3.0

#: A model with fewer MACs than the reference but at least this many times slower per MAC
#: raises MACS_NOT_LATENCY: a 2x gap means a MACs ranking would mislead the choice.
MACS_LATENCY_GAP = 2.0


def noisy(row: BenchRow) -> Finding | None:
    """BENCH_NOISY when the relative IQR exceeds :data:`~convdoctor.bench.timing.NOISY_REL_IQR`."""
    if row.rel_iqr <= NOISY_REL_IQR:
        return None
    return make_finding(
        "BENCH_NOISY",
        f"{row.model} at batch {row.batch_size}: the IQR is {row.rel_iqr:.0%} of the median "
        f"({row.p50_ms:.2f} ms, {row.n_samples} samples, {row.threads} threads); other work on the machine or a "
        "moving clock frequency is in the figures",
        evidence={
            "rel_iqr": row.rel_iqr,
            "threshold": NOISY_REL_IQR,
            "p50_ms": row.p50_ms,
            "iqr_ms": row.iqr_ms,
            "n_samples": row.n_samples,
            "threads": row.threads,
            "batch_size": row.batch_size,
        },
        fix="Re-run on a quiet machine with --threads at most the physical core count, or raise "
        "min_run_time; compare models only from runs without this warning.",
        where=f"{row.model}@{row.batch_size}",
    )


def cold_start_slow(row: BenchRow) -> Finding | None:
    """COLD_START_SLOW when the first inference is :data:`COLD_START_FACTOR` x the warm p50 or more.

    Uses the fresh-process first inference when it was measured, else the first call in
    this process (the first warm-up call).
    """
    first = row.cold_start.get("first_inference_ms") if row.cold_start_ms is not None else None
    source = "in a fresh process" if first is not None else "in this process"
    first = first if first is not None else row.first_call_ms
    if first is None or row.p50_ms <= 0 or first / row.p50_ms < COLD_START_FACTOR:
        return None
    ratio = first / row.p50_ms
    load = f"; with model load the cold start is {row.cold_start_ms:.0f} ms" if row.cold_start_ms else ""
    return make_finding(
        "COLD_START_SLOW",
        f"{row.model} at batch {row.batch_size}: the first inference {source} took {first:.1f} ms, "
        f"{ratio:.1f}x the warm p50 of {row.p50_ms:.2f} ms{load}",
        evidence={
            "first_inference_ms": first,
            "p50_ms": row.p50_ms,
            "ratio": ratio,
            "threshold": COLD_START_FACTOR,
            "source": source,
            "cold_start_ms": row.cold_start_ms,
            "batch_size": row.batch_size,
        },
        fix="Warm each replica up at the served shape before it takes traffic: "
        "convdoctor.fix.warmup(model, example_input, n=10).",
        where=f"{row.model}@{row.batch_size}",
    )


def macs_not_latency(report: BenchReport) -> list[Finding]:
    """MACS_NOT_LATENCY for each model with fewer MACs than the first but a latency gap of :data:`MACS_LATENCY_GAP`."""
    out = []
    ref = report.models[0] if report.models else None
    for r in report.ratios():
        if r.model == ref or r.macs_ratio is None or r.macs_ratio >= 1.0:
            continue
        gap = r.p50_ratio / r.macs_ratio
        if gap < MACS_LATENCY_GAP:
            continue
        row = report.row(r.model, r.batch_size)
        mem_share = row.memory_bound_share if row else None
        share = f"; memory-bound layers take {mem_share:.0%} of its profiled time" if mem_share is not None else ""
        out.append(
            make_finding(
                "MACS_NOT_LATENCY",
                f"at batch {r.batch_size}, {r.model} does {r.macs_ratio:.2f}x the MACs of {ref} but takes "
                f"{r.p50_ratio:.2f}x its p50 latency: {gap:.1f}x slower per MAC{share}",
                evidence={
                    "reference": ref,
                    "batch_size": r.batch_size,
                    "macs_ratio": r.macs_ratio,
                    "p50_ratio": r.p50_ratio,
                    "per_mac_gap": gap,
                    "threshold": MACS_LATENCY_GAP,
                    "memory_bound_share": mem_share,
                },
                fix="Choose between models by latency measured on the serving hardware and batch size, not by MACs; "
                "memory-bound layers (depthwise convolutions, normalisation) gain from fusion and larger batches, "
                "not from fewer MACs.",
                where=f"{r.model}@{r.batch_size}",
            )
        )
    return out
