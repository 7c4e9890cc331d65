"""``audit``: will this checkpoint behave the same in production?

Runs the registered checks (:func:`list_checks`) on the model inside
``preserve_model_state``: after ``audit`` the user's ``state_dict`` is bitwise identical,
every module's ``training`` flag, hooks, thread count, grad mode and the global RNG are as
before, even when a check raises midway. A model with any module in training mode (or on
another device) is audited on a deep copy; every check's buffer updates (BatchNorm
running statistics) are undone after it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .._guard import preserve_model_state
from ..capture.inputs import DEFAULT_INPUT_SIZE, format_shape, make_input, parse_input_spec
from ..errors import UsageError, one_line
from ..findings import Finding, Severity, make_finding
from ..results.audit import AuditReport, CheckRecord, CheckStatus
from ..results.base import sort_findings
from . import batch, bn_stats, determinism, export, fusion, modes, quantization  # noqa: F401  (each registers its check)
from ._tensors import logits
from .context import CheckContext, CheckSkipped, buffers_restored, rng_guard
from .data import AuditData, load_data, validate_samples
from .incident import incident_table
from .registry import CheckSpec, list_checks, select_checks

__all__ = ["AuditData", "audit", "incident_table", "list_checks", "load_data"]

logger = logging.getLogger(__name__)

#: Synthetic samples generated when no data is given (at least the largest batch size).
SYNTHETIC_SAMPLES = 8
#: Called before each check with (check name, checks done, checks in total), and once at the end.
Progress = Callable[[str, int, int], None]


def _batch_sizes(batch_sizes: Iterable[int] | str) -> tuple[int, ...]:
    parts: list[Any]
    if isinstance(batch_sizes, str):
        parts = [p.strip() for p in batch_sizes.split(",") if p.strip()]
    else:
        parts = list(batch_sizes)
    try:
        sizes = sorted({int(p) for p in parts})
    except (TypeError, ValueError):
        raise UsageError(f"batch sizes must be integers like 1,8,32, got {batch_sizes!r}") from None
    if not sizes or sizes[0] < 1:
        raise UsageError(f"batch sizes must be positive integers like 1,8,32, got {batch_sizes!r}")
    return tuple(sizes)


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"audit runs on cpu or cuda, not {dev.type}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA is not available on this machine; use --device cpu")
    return dev


def _working_model(model: nn.Module, dev: torch.device) -> nn.Module:
    """The model itself when running it cannot change it, else a deep copy on ``dev``."""
    tensors = list(model.parameters()) + list(model.buffers())
    if any(t.device.type == "meta" for t in tensors):
        raise UsageError("the model's weights are on the meta device; audit runs the model, load real weights")
    here = tensors[0].device if tensors else torch.device("cpu")
    lazy = any(nn.parameter.is_lazy(t) for t in tensors)
    training = any(m.training for m in model.modules())
    if not (training or lazy or here.type != dev.type):
        return model
    try:
        work = copy.deepcopy(model)
    except Exception as exc:  # an attribute that cannot be copied: run the original, undoing buffer updates
        if here.type != dev.type:
            raise UsageError(f"cannot copy the model to {dev.type}: {one_line(exc)}; move it yourself") from exc
        logger.info("model cannot be deep-copied (%s); auditing it in place", one_line(exc))
        return model
    return work.to(dev) if here.type != dev.type else work


def _context(work: nn.Module, sample: Any, input_size: Any, targets: Any, sizes: tuple[int, ...],
             dev: torch.device) -> CheckContext:
    """Validate the inputs once, run the model once, and build the checks' context."""
    shape = parse_input_spec(input_size)
    if sample is None:
        if targets is not None:
            raise UsageError("targets label a sample: pass the sample (or --data) with them")
        shape = shape or DEFAULT_INPUT_SIZE
        x, y = make_input((max(*sizes, SYNTHETIC_SAMPLES), *shape[1:]), seed=0), None
    else:
        x, y = validate_samples(sample, targets, shape, "sample")
    x = x.to(dev)
    try:
        with torch.no_grad(), buffers_restored(work), preserve_model_state(work):
            out = work.eval()(x[:2])
    except Exception as exc:
        raise UsageError(f"the model cannot run on inputs of shape {format_shape(x.shape[1:])}: "
                         f"{one_line(exc)}") from exc
    scores = logits(out)
    num_classes = int(scores.shape[1]) if scores is not None else None
    if y is not None:
        if num_classes is None:
            raise UsageError("targets need a classifier whose output is (N, classes) scores")
        if int(y.max()) >= num_classes:
            raise UsageError(f"labels out of range: found {int(y.max())} but the model has {num_classes} classes "
                             f"(0..{num_classes - 1})")
        y = y.to(dev)
    return CheckContext(work, x, y, sizes, dev, synthetic=sample is None, num_classes=num_classes)


def _run_check(spec: CheckSpec, ctx: CheckContext) -> CheckRecord:
    """Run one check; a skip or a crash becomes its record's status, never the audit's."""
    ctx.evidence = {}
    start = time.perf_counter()
    found: list[Finding] = []
    try:
        with preserve_model_state(ctx.model), buffers_restored(ctx.model):
            found = spec.fn(ctx)
        fails = any(f.severity.rank >= Severity.WARNING.rank for f in found)
        status = CheckStatus.FAIL if fails else CheckStatus.PASS
    except CheckSkipped as exc:
        status = CheckStatus.SKIPPED
        ctx.evidence["reason"] = str(exc)
    except Exception as exc:  # a crashing check is reported, and the other checks still run
        logger.debug("audit check %s crashed", spec.name, exc_info=True)
        status = CheckStatus.ERROR
        ctx.evidence["error"] = one_line(exc)
    return CheckRecord(spec.name, status, dict(ctx.evidence), tuple(found), time.perf_counter() - start)


def _synthetic_finding(ctx: CheckContext) -> Finding:
    shape = format_shape(ctx.sample.shape[1:])
    return make_finding(
        "SYNTHETIC_DATA",
        f"The audit ran on {ctx.n} random N(0, 1) inputs of shape {shape}: mode, batch, determinism, "
        "BatchNorm and export checks hold for any input, but there is no accuracy table and outputs on "
        "real images may differ more.",
        evidence={"samples": ctx.n, "shape": list(ctx.sample.shape[1:])},
        fix="Pass real samples: --data DIR|FILE.npz|FILE.pt, or audit(model, sample, targets=labels).",
    )


def audit(
    model: nn.Module,
    sample: torch.Tensor | None = None,
    *,
    input_size: str | Sequence[int] | None = None,
    targets: torch.Tensor | None = None,
    batch_sizes: Iterable[int] | str = (1, 8, 32),
    checks: str | Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> AuditReport:
    """Check that a model behaves the same at inference as it should: modes, batch, export.

    Args:
        model: any ``nn.Module`` (it is never changed).
        sample: a batch of real inputs ``(N, ...)``; without it, ``N`` random inputs of
            ``input_size`` (the report says so).
        input_size: ``"1x3x224x224"`` or a shape, used when ``sample`` is None (default
            1x3x224x224) and checked against ``sample`` otherwise.
        targets: integer labels of ``sample``; adds the accuracy-per-batch-size table.
        batch_sizes: batch sizes the batch check serves at.
        checks: names from :func:`list_checks` (a list or ``"a,b"``); None runs all.
        device: ``"cpu"`` or ``"cuda"``; a model elsewhere is audited on a copy.
        progress: called with ``(check_name, done, total)`` before each check and at the end.

    Returns:
        The report: findings, and one record per check with its evidence.

    Raises:
        UsageError: unknown check, bad batch sizes or device, inputs or labels the model
            cannot take.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"audit needs a torch.nn.Module, got {type(model).__name__}")
    specs = select_checks(checks)
    sizes = _batch_sizes(batch_sizes)
    dev = _device(device)
    with preserve_model_state(model, verify=True), rng_guard(dev):
        work = _working_model(model, dev)
        ctx = _context(work, sample, input_size, targets, sizes, dev)
        records = []
        for i, spec in enumerate(specs):
            if progress is not None:
                progress(spec.name, i, len(specs))
            records.append(_run_check(spec, ctx))
        if progress is not None:
            progress("", len(specs), len(specs))
    findings = [f for r in records for f in r.findings]
    if ctx.synthetic:
        findings.append(_synthetic_finding(ctx))
    inputs = {"shape": list(ctx.sample.shape), "samples": ctx.n, "synthetic": ctx.synthetic,
              "targets": ctx.targets is not None, "device": str(dev), "batch_sizes": list(sizes)}
    return AuditReport(model=type(model).__name__, findings=sort_findings(findings), checks=tuple(records),
                       input=inputs)
