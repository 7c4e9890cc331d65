"""The thresholds of the ``quantization`` check, in one place, and the metrics it reports.

:func:`quantization_metrics` is what the audit check runs (quantize, then compare; or the
fp32 share of an eager-quantized model) and :func:`quantization_findings` turns its dict
into ``QUANTIZATION_DROP`` / ``QUANTIZATION_PARTIAL``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..findings import Finding, make_finding
from .compare import compare_int8
from .coverage import dynamic_quant_coverage, has_quantized_layers

__all__ = [
    "MAX_ACCURACY_DROP_POINTS",
    "MAX_DISAGREEMENT",
    "MAX_FP32_MAC_FRACTION",
    "MIN_FLIPS",
    "quantization_findings",
    "quantization_metrics",
]

#: Accuracy may fall by at most this many percentage points (with targets).
MAX_ACCURACY_DROP_POINTS = 1.0
#: Top-1 predictions may change on at most this fraction of samples. Twice the accuracy
#: threshold: flips among already-wrong predictions, and flips that cancel, cost no accuracy.
MAX_DISAGREEMENT = 0.02
#: Below this many changed predictions no finding is raised: with a 50-sample audit one
#: flip is 2%, noise rather than evidence.
MIN_FLIPS = 3
#: A model "quantized" with more than this fraction of its MACs still in fp32 gets
#: ``QUANTIZATION_PARTIAL``: most of the compute, and usually most of the bytes, did not move.
MAX_FP32_MAC_FRACTION = 0.5


def quantization_metrics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    calibration: Any = None,
    batch_sizes: Sequence[int] = (1, 32),
    latency: bool = True,
    min_run_time: float = 0.5,
) -> dict[str, Any]:
    """Everything the ``quantization`` audit check reports, for one model.

    A model that already holds eager-quantized layers gets :func:`dynamic_quant_coverage`
    (``"mode": "eager-quantized"``). Any other model is quantized with
    :func:`~convdoctor.quant.quantize_int8` and measured with :func:`compare_int8`
    (``"mode": "static-int8"``, plus ``"record"``: what was quantized, and ``"serving"``: whether
    the int8 model was compiled, and per input shape the seconds its package took to compile or
    to load from the cache).

    Args:
        model: the user's fp32 model (not changed).
        x: inputs ``(N, ...)``. Without ``calibration`` the first half calibrates and the
            second half is evaluated, so no sample is scored by observers that saw it.
        y: labels for ``x``.
        calibration: calibration inputs; then all of ``x`` is evaluated.
        batch_sizes: batch sizes to time.
        latency: False skips timing.
        min_run_time: seconds of timing per model and batch size.

    Returns:
        The metrics dict; feed it to :func:`quantization_findings`.

    Raises:
        UsageError: fewer than 2 inputs to split, or bad data.
        CaptureError: the model cannot be exported for PT2E quantization.
    """
    if has_quantized_layers(model):
        return {"mode": "eager-quantized", **dynamic_quant_coverage(model, (1, *x.shape[1:]))}
    from .pt2e import quantize_int8  # torchao is imported only when quantizing

    if calibration is None:
        if x.shape[0] < 2:
            raise UsageError("need at least 2 inputs: half calibrate the int8 model, half evaluate it")
        half = x.shape[0] // 2
        calibration, x, y = x[:half], x[half:], None if y is None else y[half:]
    result = quantize_int8(model, calibration)
    metrics = compare_int8(
        model, result.model, x, y, batch_sizes=batch_sizes, latency=latency, min_run_time=min_run_time
    )
    served = result.model
    serving = {
        "compiled": result.compiled,
        "note": str(getattr(served, "note", "")),
        "packages": [asdict(r) for r in getattr(served, "records", ())],  # compiled or loaded from the cache
    }
    return {"mode": "static-int8", **metrics, "record": result.to_dict(), "serving": serving}


def _drop_finding(
    metrics: dict[str, Any], max_accuracy_drop: float, max_disagreement: float, min_flips: int
) -> Finding | None:
    reasons = []
    drop = metrics.get("accuracy_drop_points")
    if drop is not None and drop > max_accuracy_drop:
        reasons.append(
            f"accuracy fell {drop:.2f} points ({100 * metrics['accuracy_fp32']:.2f}% -> "
            f"{100 * metrics['accuracy_int8']:.2f}%, limit {max_accuracy_drop:g})"
        )
    if metrics["disagreement"] > max_disagreement and metrics["flips"] >= min_flips:
        reasons.append(
            f"top-1 changed on {metrics['flips']} of {metrics['n_samples']} inputs "
            f"({100 * metrics['disagreement']:.2f}%, limit {100 * max_disagreement:g}%)"
        )
    if not reasons:
        return None
    keys = (
        "n_samples",
        "flips",
        "top1_agreement",
        "disagreement",
        "accuracy_fp32",
        "accuracy_int8",
        "accuracy_drop_points",
        "max_abs_error",
        "max_abs_output",
        "size_ratio",
    )
    evidence = {k: metrics[k] for k in keys if k in metrics}
    evidence |= {"max_accuracy_drop_points": max_accuracy_drop, "max_disagreement": max_disagreement}
    record = metrics.get("record") or {}
    if record.get("int8_path"):  # which kernels ran, and what the held-out check blamed
        evidence["int8_path"] = record["int8_path"]["description"]
        if record.get("activations"):
            evidence["activations"] = record["activations"]
        cause = (record.get("verification") or {}).get("likely_cause")
        if cause:
            reasons.append(f"likely cause: {cause}")
    return make_finding(
        "QUANTIZATION_DROP",
        "INT8 model disagrees with FP32: " + "; ".join(reasons) + ".",
        evidence=evidence,
        where="quantization",
        fix="Calibrate on more representative data (a few hundred real inputs): "
        "convdoctor.fix.quantize_int8(model, calibration); if it persists, keep the most "
        "sensitive layers (usually the first conv and the classifier) in float.",
    )


def _partial_finding(coverage: dict[str, Any], max_fp32_fraction: float) -> Finding | None:
    frac = coverage.get("fp32_mac_fraction")
    if not coverage.get("quantized_layers") or frac is None or frac <= max_fp32_fraction:
        return None
    kinds = sorted(set(coverage["quantized_layers"].values()))
    return make_finding(
        "QUANTIZATION_PARTIAL",
        f"Only {len(coverage['quantized_layers'])} layer(s) ({', '.join(kinds)}) are int8: "
        f"{100 * frac:.1f}% of the MACs ({coverage['fp32_macs']:,} of "
        f"{coverage['fp32_macs'] + coverage['int8_macs']:,}) still run in fp32.",
        evidence={k: coverage[k] for k in ("int8_macs", "fp32_macs", "fp32_mac_fraction", "dynamic_only")}
        | {"max_fp32_mac_fraction": max_fp32_fraction},
        where="quantization",
        fix="Quantize the convolutions too, statically with calibration data: "
        "convdoctor.fix.quantize_int8(model, calibration).",
    )


def quantization_findings(
    metrics: dict[str, Any],
    *,
    max_accuracy_drop: float = MAX_ACCURACY_DROP_POINTS,
    max_disagreement: float = MAX_DISAGREEMENT,
    min_flips: int = MIN_FLIPS,
    max_fp32_mac_fraction: float = MAX_FP32_MAC_FRACTION,
) -> list[Finding]:
    """Findings from :func:`compare_int8` metrics and/or :func:`dynamic_quant_coverage`.

    ``QUANTIZATION_DROP`` when the accuracy drop exceeds ``max_accuracy_drop`` points
    (needs targets) or the top-1 disagreement exceeds ``max_disagreement`` with at least
    ``min_flips`` changed predictions. ``QUANTIZATION_PARTIAL`` when quantized layers exist
    but more than ``max_fp32_mac_fraction`` of the MACs are fp32.

    Args:
        metrics: a compare_int8 dict, a coverage dict, or both merged.
        max_accuracy_drop: percentage points.
        max_disagreement: fraction of samples.
        min_flips: changed predictions needed before disagreement counts.
        max_fp32_mac_fraction: fraction of MACs.

    Returns:
        Zero, one or two findings.
    """
    found = []
    if "disagreement" in metrics:
        found.append(_drop_finding(metrics, max_accuracy_drop, max_disagreement, min_flips))
    if "fp32_mac_fraction" in metrics:
        found.append(_partial_finding(metrics, max_fp32_mac_fraction))
    return [f for f in found if f is not None]
