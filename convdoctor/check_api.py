"""``check``: inspect + rf + audit (+ a short bench) on one model, one report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .api import inspect, resolve_model
from .capture.load import LoadedModel, load_model
from .errors import ConvDoctorError, UsageError, one_line
from .findings import Finding
from .results.base import ReportBase, sort_findings
from .results.check import Report

#: bench settings for check: a short, honest measurement, not a full sweep.
CHECK_BENCH = {"min_run_time": 0.5, "max_run_time": 5.0, "min_samples": 20, "cold_start": False, "probe": False}


def _real(loaded: LoadedModel) -> nn.Module:
    """A real-weight module for the verbs that run the model."""
    if loaded.on_meta:
        if loaded.rebuild is None:
            raise UsageError("this model lives on the meta device; pass one with real weights")
        return loaded.rebuild()
    return loaded.module


def _merge(parts: dict[str, ReportBase]) -> tuple[Finding, ...]:
    """All findings; a code raised about the same place by two verbs is kept once (the later, richer one)."""
    seen: dict[tuple[str, str | None], Finding] = {}
    for part in parts.values():
        for f in part.findings:
            seen[(f.code, f.where)] = f
    return sort_findings(list(seen.values()))


def check(
    model: nn.Module | str,
    input_size: str | Sequence[int] | None = None,
    *,
    sample: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    object_size: int | str | None = None,
    batch_sizes: Sequence[int] = (1, 8),
    audit_checks: Sequence[str] | None = None,
    bench: bool = True,
    device: str = "cpu",
    weights: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run every verb on one model and merge the findings.

    Args:
        model: an ``nn.Module`` or a MODEL spec.
        input_size: the input shape (default: the spec's suggestion).
        sample: real inputs for audit (else synthetic, and audit says so).
        targets: labels of ``sample``.
        object_size: object size in pixels for the receptive-field findings.
        batch_sizes: batch sizes for audit and bench.
        audit_checks: audit checks to run (default all).
        bench: include a short latency measurement.
        device: ``cpu`` or ``cuda``.
        weights: a state_dict checkpoint for a MODEL spec.
        progress: called with the verb's name before it runs.

    Returns:
        The combined report; a verb that could not run is listed in ``skipped`` with why.
    """
    from .audit import audit
    from .bench import bench as run_bench
    from .rf_api import receptive_field

    spec = model if isinstance(model, str) else None
    loaded = load_model(model, meta=False) if isinstance(model, str) else resolve_model(model)
    if weights is not None:
        from .capture.load import load_weights

        loaded = load_weights(loaded, weights)
    real = _real(loaded)
    if loaded.fresh:
        real.eval()  # our own freshly built copy: serve it as a user would, in eval mode
    size = input_size if input_size is not None else (tuple(sample.shape) if sample is not None else None)
    steps: dict[str, Callable[[], ReportBase]] = {
        "inspect": lambda: inspect(loaded, size),
        "rf": lambda: receptive_field(loaded, size, object_size=object_size),
        "audit": lambda: audit(real, sample, input_size=None if sample is not None else size, targets=targets,
                               batch_sizes=batch_sizes, checks=audit_checks, device=device),
    }
    if bench:
        steps["bench"] = lambda: run_bench(spec if spec is not None and weights is None else real, size,
                                           batch_sizes=tuple(batch_sizes)[:2], device=device, **CHECK_BENCH)
    parts: dict[str, ReportBase] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, step in steps.items():
        if progress is not None:
            progress(name)
        start = time.perf_counter()
        try:
            parts[name] = step()
        except UsageError:
            raise
        except ConvDoctorError as exc:
            skipped[name] = one_line(exc)
        seconds[name] = time.perf_counter() - start
    return Report(model=loaded.spec, findings=_merge(parts), parts=parts, skipped=skipped, seconds=seconds)


