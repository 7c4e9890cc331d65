"""``bench`` and ``compare``: validate, load, check the size fits, then one row per model and batch."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..capture.footprint import ensure_fits, meta_call
from ..capture.inputs import InputSize
from ..errors import UsageError
from ..findings import Finding
from ..results.base import sort_findings
from ..results.bench import BenchReport, BenchRow
from . import _findings
from ._options import BenchOptions, bench_options, validate_input
from .probe import MachinePeaks, machine_peaks
from .row import bench_row
from .target import Target, make_target

#: Called before each step: ``progress(description, done, total)``.
Progress = Callable[[str, int, int], None]


def _peaks(opts: BenchOptions) -> tuple[MachinePeaks | None, dict[str, Any]]:
    if not opts.probe:
        return None, {"reason": "not requested (probe=False)"}
    try:
        peaks = machine_peaks(opts.device, opts.threads, opts.dtype.torch)
    except RuntimeError as exc:  # e.g. a dtype without a matmul kernel on this device
        return None, {"reason": f"peak probe failed: {exc}"}
    return peaks, peaks.to_dict()


def _run(targets: list[Target], opts: BenchOptions, progress: Progress | None) -> tuple[list[BenchRow], dict[str, Any]]:
    for t in targets:  # before the first allocation: a size that cannot fit is refused with the numbers
        ensure_fits(t.module, *meta_call(t.call, max(opts.batch_sizes)), device=opts.device)
    peaks, machine = _peaks(opts)
    rows = []
    total = len(targets) * len(opts.batch_sizes)
    for i, (t, bs) in enumerate(itertools.product(targets, opts.batch_sizes)):
        if progress is not None:
            progress(f"{t.name} batch {bs}", i, total)
        rows.append(bench_row(t, bs, opts, peaks))
    if progress is not None:
        progress("done", total, total)
    return rows, machine


def _row_findings(rows: Sequence[BenchRow]) -> list[Finding]:
    found = [f(r) for r in rows for f in (_findings.noisy, _findings.cold_start_slow)]
    return [f for f in found if f is not None]


def bench(
    model: nn.Module | str,
    input_size: InputSize = None,
    *,
    batch_sizes: int | str | Sequence[int] = (1,),
    device: str = "cpu",
    threads: int | None = None,
    dtype: str | torch.dtype = "float32",
    weights: str | os.PathLike[str] | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    example_input: Any = None,
    **options: Any,
) -> BenchReport:
    """Measure a model's latency, throughput, cold start and where its time goes.

    Args:
        model: an ``nn.Module`` or a MODEL spec (a spec also gets a cold start measured in a
            fresh process; a module's cold start is reported absent with the reason).
        input_size: input shape such as ``"1x3x224x224"`` (or keyword sizes
            ``"pixel_values=1x3x224x224"``; ``CxHxW`` is one image for a detector); its batch is
            replaced by each batch size. Default: the spec's suggested size, else 1x3x224x224.
        batch_sizes: sizes to sweep (``(1, 8)``, ``"1,8,32"``).
        device: ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads (default: the current count); always recorded.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (weights and input).
        weights: state_dict checkpoint for a MODEL spec (``weights_only=True``).
        name: display name (default: the spec or the class name).
        progress: ``progress(description, done, total)`` before each row.
        example_input: instead of ``input_size``: a tensor, a tuple of positional args, a list
            of images or a dict of keyword args; its one tensor is cycled along the batch to
            each batch size.
        **options: ``warmup`` (10), ``min_samples`` (100), ``min_run_time`` (1.0 s),
            ``max_run_time`` (30 s), ``cold_start`` (True), ``profile`` (True), ``probe``
            (True), ``top`` (10), ``trusted`` (False), ``captures`` (None): see
            :class:`~convdoctor.bench.BenchOptions`.

    Returns:
        The report: one row per batch size, findings BENCH_NOISY and COLD_START_SLOW.

    Raises:
        UsageError: invalid argument (batch size 0, unknown device, CUDA without a GPU ...).
        ModelLoadError: the spec cannot be loaded.
        CaptureError: the model fails on the input.
    """
    opts = bench_options(batch_sizes, device, threads, dtype, **options)
    validate_input(input_size, example_input)  # before loading anything
    target = make_target(model, name, weights, input_size, example_input, opts.trusted)
    rows, machine = _run([target], opts, progress)
    return BenchReport(
        model=target.name,
        findings=sort_findings(_row_findings(rows)),
        rows=tuple(rows),
        machine=machine,
        method=opts.method(),
    )


def compare(
    models: Mapping[str, nn.Module | str],
    input_size: InputSize = None,
    *,
    progress: Progress | None = None,
    **bench_kwargs: Any,
) -> BenchReport:
    """Bench several models under the same conditions, ratios against the first.

    Args:
        models: display name -> ``nn.Module`` or MODEL spec, in the order to report; the
            first is the reference of every ratio.
        input_size: as for :func:`bench` (one size for all models).
        progress: as for :func:`bench`.
        **bench_kwargs: any keyword of :func:`bench` (``batch_sizes``, ``device``, ``threads``, ...).

    Returns:
        One report with every model's rows; ``report.ratios()`` and the JSON
        ``comparison`` hold MACs, params, p50, p99 and throughput ratios to the first model;
        findings add MACS_NOT_LATENCY.

    Raises:
        UsageError: no models, or an invalid argument.
    """
    if not models:
        raise UsageError("compare needs at least one model, e.g. {'resnet18': 'torchvision:resnet18'}")
    for key in ("name", "weights", "captures"):
        if bench_kwargs.pop(key, None) is not None:
            raise UsageError(f"{key}= applies to one model; use bench() for it")
    example_input = bench_kwargs.pop("example_input", None)
    opts = bench_options(
        bench_kwargs.pop("batch_sizes", (1,)),
        bench_kwargs.pop("device", "cpu"),
        bench_kwargs.pop("threads", None),
        bench_kwargs.pop("dtype", "float32"),
        **bench_kwargs,
    )
    validate_input(input_size, example_input)
    targets = [make_target(m, str(n), None, input_size, example_input, opts.trusted) for n, m in models.items()]
    rows, machine = _run(targets, opts, progress)
    report = BenchReport(
        model=" vs ".join(t.name for t in targets), rows=tuple(rows), machine=machine, method=opts.method()
    )
    findings = _row_findings(rows) + _findings.macs_not_latency(report)
    return BenchReport(
        model=report.model, findings=sort_findings(findings), rows=report.rows, machine=machine, method=report.method
    )
