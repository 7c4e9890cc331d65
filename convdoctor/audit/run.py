"""Running the audit: the working model, one context, each registered check under its guards.

:func:`audit` validates once, picks the checks (:mod:`.registry`), builds the inputs
(:mod:`._inputs`) and runs each check inside ``preserve_model_state`` with its buffer updates
undone; a check that raises becomes an ``error`` record, never a lost audit.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .._guard import preserve_model_state
from .._native import capture_native
from ..capture.choices import ModelMode, parse_batch_sizes, parse_device
from ..capture.footprint import ensure_fits
from ..capture.inputs import (
    DEFAULT_INPUT_SIZE,
    InputSize,
    format_shape,
    make_input,
    parse_input_spec,
    takes_image_list,
)
from ..capture.load import LoadedModel
from ..capture.once import Captures, shared_captures
from ..capture.prepare import ModelLike, prepare_model
from ..errors import UsageError, one_line
from ..findings import Finding, Severity, make_finding
from ..results.audit import AuditReport, CheckRecord, CheckStatus
from ..results.base import sort_findings
from . import batch, bn_stats, determinism, export, fusion, modes, quantization  # noqa: F401  (each registers its check)
from ._inputs import Call, audit_inputs
from ._tensors import find_scores
from .context import CheckContext, CheckSkipped, buffers_restored, rng_guard
from .data import validate_samples
from .registry import CheckSpec, select_checks

logger = logging.getLogger(__name__)

#: Synthetic samples generated when no data is given (at least the largest batch size).
SYNTHETIC_SAMPLES = 8
#: Called before each check with (check name, checks done, checks in total), and once at the end.
Progress = Callable[[str, int, int], None]


#: Checks that export, fold or quantize the model with one positional tensor: skipped, with the
#: reason, when the model is called another way (keyword inputs, several arguments, images).
PLAIN_CALL_CHECKS = frozenset({"export", "fusion", "quantization"})


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


def _context(
    work: nn.Module,
    sample: Any,
    input_size: Any,
    targets: Any,
    sizes: tuple[int, ...],
    dev: torch.device,
    scores_key: str | int | None,
    call: Call | None = None,
    captures: Captures | None = None,
) -> tuple[CheckContext, str]:
    """Validate the inputs once, run the model once, and build the checks' context."""
    shape = parse_input_spec(input_size)
    if sample is None:
        if targets is not None:
            raise UsageError("targets label a sample: pass the sample (or --data) with them")
        shape = shape or DEFAULT_INPUT_SIZE
        n = max(*sizes, SYNTHETIC_SAMPLES)
        probe = make_input((max(sizes), *shape[1:]), device="meta")
        args, kwargs = ((probe,), {}) if call is None else call(probe)
        ensure_fits(work, args, kwargs, device=dev, input_bytes=n * probe[0].numel() * probe.element_size())
        x, y = make_input((n, *shape[1:]), seed=0), None
    else:
        x, y = validate_samples(sample, targets, shape, "sample")
    x = x.to(dev)
    try:
        with torch.no_grad(), buffers_restored(work), preserve_model_state(work):
            args, kwargs = ((x[:2],), {}) if call is None else call(x[:2])
            out = work.eval()(*args, **kwargs)
    except Exception as exc:
        raise UsageError(
            f"the model cannot run on inputs of shape {format_shape(x.shape[1:])}: {one_line(exc)}"
        ) from exc
    where, reason = find_scores(out, scores_key)
    found = where(out) if where is not None else None
    num_classes = int(found.shape[1]) if found is not None else None
    if y is not None:
        # the accuracy table is optional: without scores to read it is left out, with the reason
        if where is not None and num_classes is not None and int(y.max()) >= num_classes:
            raise UsageError(
                f"labels out of range: found {int(y.max())} but {where.describe()} has "
                f"{num_classes} classes (0..{num_classes - 1})"
            )
        y = y.to(dev)
    ctx = CheckContext(
        work,
        x,
        y,
        sizes,
        dev,
        synthetic=sample is None,
        num_classes=num_classes,
        scores=where,
        call=call,
        captures=captures,
    )
    return ctx, reason


def _run_check(spec: CheckSpec, ctx: CheckContext) -> CheckRecord:
    """Run one check; a skip or a crash becomes its record's status, never the audit's."""
    ctx.evidence = {}
    start = time.perf_counter()
    found: list[Finding] = []
    try:
        if ctx.call is not None and spec.name in PLAIN_CALL_CHECKS:
            ctx.skip(
                f"{spec.name} feeds the model one positional tensor; this model is called with "
                "keyword arguments, several arguments or a list of images"
            )
        # exporters and the quantizer print graphs and log tracebacks to fd 2: held, shown under -v
        with (
            preserve_model_state(ctx.model),
            buffers_restored(ctx.model),
            capture_native(f"audit check {spec.name}") as native,
        ):
            found = spec.fn(ctx)
        if native.lines:
            ctx.evidence["third_party_output"] = {"lines": len(native.lines), "first": native.summary()}
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
    model: ModelLike,
    sample: Any = None,
    *,
    input_size: InputSize = None,
    targets: torch.Tensor | None = None,
    batch_sizes: int | str | Sequence[int] = (1, 8, 32),
    checks: str | Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    scores: str | int | None = None,
    example_input: Any = None,
    weights: str | os.PathLike[str] | None = None,
    mode: ModelMode | str = ModelMode.AUTO,
    data: str | os.PathLike[str] | None = None,
    limit: int = 256,
    trusted: bool = False,
    captures: Captures | None = None,
) -> AuditReport:
    """Check that a model behaves the same at inference as it should: modes, batch, export.

    Args:
        model: any ``nn.Module`` (it is never changed) or a MODEL spec (``torchvision:resnet18``,
            ``pkg.module:factory``, a ``.pt``/``.pt2`` file), as on the command line.
        sample: a batch of real inputs ``(N, ...)``, or any ``example_input`` form whose one
            tensor is the batch (``{"pixel_values": x}``, ``(x, 0.5)``, a list of images);
            without it, ``N`` random inputs of ``input_size`` (the report says so).
        input_size: ``"1x3x224x224"``, a shape, or keyword sizes ``"pixel_values=1x3x8x8"``,
            used when ``sample`` is None (default: the spec's size, else 1x3x224x224) and
            checked against ``sample`` otherwise.
        targets: integer labels of ``sample``; adds the accuracy-per-batch-size table when the
            output holds class scores (see ``scores``); otherwise the checks run without it and
            ``report.input["accuracy_skipped"]`` says why.
        batch_sizes: batch sizes the batch check serves at.
        checks: names from :func:`list_checks` (a list or ``"a,b"``); None runs all.
        device: ``"cpu"`` or ``"cuda"``; a model elsewhere is audited on a copy.
        progress: called with ``(check_name, done, total)`` before each check and at the end.
        scores: where the ``(N, classes)`` scores are in a dict/tuple output (a key, an index
            or an attribute name). Default: the output itself, else ``logits`` or ``out``,
            else its one 2-D tensor; ``report.input["scores"]`` says which was used.
        example_input: the same as ``sample`` (the name every other verb uses).
        weights: a state_dict checkpoint for a MODEL spec (``weights_only=True``).
        mode: ``auto`` (eval for a model a factory just built, as-is otherwise), ``as-is``
            or ``eval`` (on a copy): see :class:`~convdoctor.capture.choices.ModelMode`.
        data: an ImageFolder directory, ``.npz`` (x[, y]) or ``.pt`` file of samples and labels,
            instead of ``sample``.
        limit: samples kept from ``data``.
        trusted: a ``.pt``/``.pt2`` MODEL file you trust: loaded without vetting (it may run
            code; see :mod:`convdoctor.capture.archive`).
        captures: graphs already captured of this one model (``check`` hands over inspect's):
            the checks that read only the graph's structure use them instead of capturing.

    Returns:
        The report: findings, and one record per check with its evidence.

    Raises:
        UsageError: unknown check, bad batch sizes or device, inputs or labels the model
            cannot take.
    """
    if not isinstance(model, (nn.Module, str, LoadedModel)):
        raise UsageError(f"audit needs a torch.nn.Module or a MODEL spec, got {type(model).__name__}")
    specs = select_checks(checks)
    sizes = parse_batch_sizes(batch_sizes)
    captures = shared_captures(captures)
    dev = torch.device(parse_device(device))
    loaded = prepare_model(model, weights=weights, mode=mode, trusted=trusted)
    given = audit_inputs(
        sample=sample,
        example_input=example_input,
        input_size=input_size,
        targets=targets,
        data=data,
        limit=limit,
        default_size=loaded.default_input_size,
        images=takes_image_list(loaded.module),
    )
    with preserve_model_state(loaded.module, verify=True), rng_guard(dev):
        work = _working_model(loaded.module, dev)
        ctx, no_scores = _context(
            work, given.sample, given.input_size, given.targets, sizes, dev, scores, given.call, captures
        )
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
    inputs = {
        "shape": list(ctx.sample.shape),
        "samples": ctx.n,
        "synthetic": ctx.synthetic,
        "targets": ctx.targets is not None,
        "device": str(dev),
        "batch_sizes": list(sizes),
        "scores": ctx.scores.describe() if ctx.scores is not None else None,
    }
    if ctx.targets is not None and ctx.scores is None:
        inputs["accuracy_skipped"] = f"no accuracy table: {no_scores}"
    return AuditReport(model=loaded.spec, findings=sort_findings(findings), checks=tuple(records), input=inputs)
