"""INT8 vs FP32: what quantization cost in accuracy and bought in size and speed.

Pure measurement functions for the ``quantization`` audit check, which wires them as
``check(ctx)``: :func:`compare_int8` (agreement, accuracy, output error, bytes on disk,
latency), :func:`dynamic_quant_coverage` (how much of a ``quantize_dynamic`` model's work
still runs in fp32) and :func:`quantization_findings` (the thresholds, in one place).

Sizes are bytes of a file on disk: ``torch.save`` of the model's ``state_dict`` (oneDNN
prepacked int8 weights converted to dense int8 tensors first), the same format for both
models, read back by ``torch.load(weights_only=True)``. For a lowered PT2E model that is
the int8 weights, their per-channel scales and zero points, and fp32 biases.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._guard import preserve_model_state
from ..errors import UsageError
from ..findings import Finding, make_finding

__all__ = [
    "MAX_ACCURACY_DROP_POINTS", "MAX_DISAGREEMENT", "MAX_FP32_MAC_FRACTION", "MIN_FLIPS",
    "compare_int8", "dynamic_quant_coverage", "has_quantized_layers", "quantization_findings",
    "quantization_metrics", "serialized_bytes",
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
#: Samples per forward when computing agreement (bounds memory on large sets).
_EVAL_CHUNK = 256
#: Module namespaces of eager-mode quantized layers (``quantize_dynamic``, ``convert``).
_QUANTIZED_NAMESPACES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized")


def serialized_bytes(model: nn.Module) -> int:
    """Bytes on disk of ``torch.save(model.state_dict())``, mkldnn tensors made dense first.

    Args:
        model: any module (fp32, PT2E-lowered, eager-quantized).

    Returns:
        The size of the written file.
    """
    state = {k: (v.to_dense() if isinstance(v, torch.Tensor) and v.is_mkldnn else v)
             for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="convdoctor-size-") as tmp:
        path = os.path.join(tmp, "state.pt")
        torch.save(state, path)
        return os.path.getsize(path)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise UsageError("compare_int8 needs models that return one (N, classes) tensor; "
                         f"got {type(out).__name__}{'' if not isinstance(out, torch.Tensor) else tuple(out.shape)}")
    return out.detach().float()


def _eval_flags(model: nn.Module) -> None:
    # Flags, not model.eval(): modules from torch.export refuse eval(); the guard restores them.
    for m in model.modules():
        m.training = False


def _device(model: nn.Module) -> torch.device:
    """Where the model's first parameter or buffer lives (CPU for a stateless model)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    device = _device(model)
    with preserve_model_state(model), torch.no_grad():
        _eval_flags(model)
        return torch.cat([_logits(model, chunk.to(device)).cpu() for chunk in torch.split(x, _EVAL_CHUNK)])


def _accuracy_metrics(ref: torch.Tensor, q: torch.Tensor, y: torch.Tensor | None) -> dict[str, Any]:
    n = int(ref.shape[0])
    flips = int((ref.argmax(1) != q.argmax(1)).sum())
    err = (ref - q).abs()
    out: dict[str, Any] = {
        "n_samples": n, "flips": flips, "top1_agreement": 1 - flips / n, "disagreement": flips / n,
        "max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()),
        "max_abs_output": float(ref.abs().max()),
    }
    if y is not None:
        acc_fp32 = float((ref.argmax(1) == y).float().mean())
        acc_int8 = float((q.argmax(1) == y).float().mean())
        out |= {"accuracy_fp32": acc_fp32, "accuracy_int8": acc_int8,
                "accuracy_drop_points": 100.0 * (acc_fp32 - acc_int8)}
    return out


def _latency(fp32_model: nn.Module, int8_model: nn.Module, x: torch.Tensor, batch_sizes: Sequence[int],
             threads: int, min_run_time: float) -> dict[str, Any]:
    # bench's method: torch.utils.benchmark's loop, one call per sample, warm-up apart
    from ..bench.timing import measure

    rows = {}
    for b in batch_sizes:
        medians, warnings = {}, []
        for name, model in (("fp32", fp32_model), ("int8", int8_model)):
            device = _device(model)
            xb = x[torch.arange(b) % x.shape[0]].to(device)
            with preserve_model_state(model), torch.no_grad():
                _eval_flags(model)
                res = measure(functools.partial(model, xb), batch_size=b, threads=threads, device=device.type,
                              warmup=3, min_samples=10, min_run_time=min_run_time,
                              max_run_time=max(10 * min_run_time, 2.0))
            medians[name] = res.median_ms
            warnings += [f"{name}: {w}" for w in res.warnings]
        rows[str(b)] = {"fp32_ms": medians["fp32"], "int8_ms": medians["int8"],
                        "ratio": medians["int8"] / medians["fp32"], "warnings": warnings}
    return rows


def compare_int8(fp32_model: nn.Module, int8_model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                 *, batch_sizes: Sequence[int] = (1, 32), threads: int | None = None,
                 min_run_time: float = 0.5, latency: bool = True) -> dict[str, Any]:
    """Measure an INT8 model against its FP32 original on the same inputs.

    Both models run in eval mode under ``torch.no_grad``; their ``training`` flags and
    hooks are restored afterwards and no weight is written.

    Args:
        fp32_model: the original model.
        int8_model: its quantized version (``quantize_int8(...).model``, a ``quantize_dynamic``
            model...); both return ``(N, classes)`` logits.
        x: evaluation inputs ``(N, ...)`` on CPU.
        y: class labels ``(N,)``; adds accuracies and ``accuracy_drop_points``.
        batch_sizes: batch sizes to time (inputs cycled from ``x``).
        threads: intra-op threads for timing (default: the current setting).
        min_run_time: seconds of samples per model and batch size.
        latency: False skips timing (the slow part).

    Returns:
        ``n_samples``, ``flips``, ``top1_agreement``, ``disagreement``, ``max_abs_error``,
        ``mean_abs_error``, ``max_abs_output``; with ``y`` ``accuracy_fp32``,
        ``accuracy_int8``, ``accuracy_drop_points`` (fp32 minus int8, in points);
        ``size_fp32_bytes``, ``size_int8_bytes``, ``size_ratio`` (int8 / fp32); with
        ``latency`` ``threads`` and ``latency`` ``{batch: {fp32_ms, int8_ms, ratio, warnings}}``
        (medians; ratio is int8 / fp32, below 1 is faster).
    """
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] == 0:
        raise UsageError("compare_int8 needs a non-empty (N, ...) input tensor")
    if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
        raise UsageError(f"targets have shape {tuple(y.shape)} for {x.shape[0]} inputs; pass one label per input")
    x = x.detach().cpu()
    metrics = _accuracy_metrics(_outputs(fp32_model, x), _outputs(int8_model, x),
                                None if y is None else y.detach().cpu())
    size_fp32, size_int8 = serialized_bytes(fp32_model), serialized_bytes(int8_model)
    metrics |= {"size_fp32_bytes": size_fp32, "size_int8_bytes": size_int8, "size_ratio": size_int8 / size_fp32}
    if latency:
        threads = threads or torch.get_num_threads()
        metrics |= {"threads": threads,
                    "latency": _latency(fp32_model, int8_model, x, batch_sizes, threads, min_run_time)}
    return metrics


def _is_quantized(module: nn.Module) -> bool:
    return type(module).__module__.startswith(_QUANTIZED_NAMESPACES)


def _quantized_macs(module: nn.Module, output_shape: Sequence[int] | None) -> int | None:
    """MACs of an eager-quantized Linear or conv from its attributes and output shape, else None.

    Linear: ``rows * in_features * out_features`` with ``rows`` the output's elements over
    ``out_features``. Conv: ``output elements * in_channels / groups * prod(kernel_size)``.
    """
    if output_shape is None:
        return None
    numel = math.prod(output_shape)
    attrs: Any = module  # quantized modules keep these as plain ints and tuples
    if hasattr(attrs, "in_features") and hasattr(attrs, "out_features"):
        return numel * int(attrs.in_features)
    if hasattr(attrs, "in_channels") and hasattr(attrs, "kernel_size"):
        return numel * int(attrs.in_channels) // int(getattr(attrs, "groups", 1)) * int(math.prod(attrs.kernel_size))
    return None


def dynamic_quant_coverage(model: nn.Module, input_size: Any) -> dict[str, Any]:
    """How much of a model's MACs run in int8 kernels versus fp32, for eager-mode quantization.

    Meant for ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear})`` models: the
    classifier head is int8, every convolution fp32. fp32 MACs are ``inspect``'s counted
    MACs outside the quantized layers; int8 MACs come from each quantized layer's
    attributes and output shape (inspect has no cost rule for the quantized ops).

    Args:
        model: the (possibly) quantized model; not changed.
        input_size: as for ``convdoctor.inspect`` (``"1x3x224x224"``).

    Returns:
        ``quantized_layers`` (path -> class), ``dynamic_only`` (every quantized layer is a
        dynamic one), ``int8_macs``, ``fp32_macs``, ``fp32_mac_fraction`` (None when no MAC
        was counted), ``uncounted_quantized`` (quantized layers whose MACs are unknown),
        ``other_uncounted_op_calls``.
    """
    from ..api import inspect  # the api imports audit: import at call time

    report = inspect(model, input_size)
    modules = dict(model.named_modules())
    rows = {r.name: r for r in report.layers}
    quantized = {p: m for p, m in modules.items() if _is_quantized(m) and p in rows
                 and not any(p.startswith(q + ".") for q in modules if q != p and _is_quantized(modules[q]))}
    int8_macs, unknown = 0, []
    for path, module in quantized.items():
        macs = _quantized_macs(module, rows[path].output_shape)
        if macs is None:
            unknown.append(path)
        else:
            int8_macs += macs
    fp32_macs = int(report.totals["macs"]) - sum(rows[p].macs for p in quantized)
    total = int8_macs + fp32_macs
    return {
        "quantized_layers": {p: type(m).__name__ for p, m in quantized.items()},
        "dynamic_only": bool(quantized) and all(".dynamic" in type(m).__module__ for m in quantized.values()),
        "int8_macs": int8_macs, "fp32_macs": fp32_macs,
        "fp32_mac_fraction": fp32_macs / total if total else None,
        "uncounted_quantized": unknown,
        "other_uncounted_op_calls": int(report.totals["uncounted_op_calls"]) - sum(rows[p].uncounted for p in quantized),
    }


def has_quantized_layers(model: nn.Module) -> bool:
    """Whether the model holds eager-mode quantized layers (``quantize_dynamic``, ``convert``)."""
    return any(_is_quantized(m) for m in model.modules())


def quantization_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                         calibration: Any = None, batch_sizes: Sequence[int] = (1, 32),
                         latency: bool = True, min_run_time: float = 0.5) -> dict[str, Any]:
    """Everything the ``quantization`` audit check reports, for one model.

    A model that already holds eager-quantized layers gets :func:`dynamic_quant_coverage`
    (``"mode": "eager-quantized"``). Any other model is quantized with
    ``convdoctor.fix.quantize_int8`` and measured with :func:`compare_int8`
    (``"mode": "static-int8"``, plus ``"record"``: what was quantized).

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
    from ..fix.quantize import quantize_int8  # torchao is imported only when quantizing

    if calibration is None:
        if x.shape[0] < 2:
            raise UsageError("need at least 2 inputs: half calibrate the int8 model, half evaluate it")
        half = x.shape[0] // 2
        calibration, x, y = x[:half], x[half:], None if y is None else y[half:]
    result = quantize_int8(model, calibration)
    metrics = compare_int8(model, result.model, x, y, batch_sizes=batch_sizes, latency=latency,
                           min_run_time=min_run_time)
    return {"mode": "static-int8", **metrics, "record": result.to_dict()}


def _drop_finding(metrics: dict[str, Any], max_accuracy_drop: float, max_disagreement: float,
                  min_flips: int) -> Finding | None:
    reasons = []
    drop = metrics.get("accuracy_drop_points")
    if drop is not None and drop > max_accuracy_drop:
        reasons.append(f"accuracy fell {drop:.2f} points ({100 * metrics['accuracy_fp32']:.2f}% -> "
                       f"{100 * metrics['accuracy_int8']:.2f}%, limit {max_accuracy_drop:g})")
    if metrics["disagreement"] > max_disagreement and metrics["flips"] >= min_flips:
        reasons.append(f"top-1 changed on {metrics['flips']} of {metrics['n_samples']} inputs "
                       f"({100 * metrics['disagreement']:.2f}%, limit {100 * max_disagreement:g}%)")
    if not reasons:
        return None
    keys = ("n_samples", "flips", "top1_agreement", "disagreement", "accuracy_fp32", "accuracy_int8",
            "accuracy_drop_points", "max_abs_error", "max_abs_output", "size_ratio")
    evidence = {k: metrics[k] for k in keys if k in metrics}
    evidence |= {"max_accuracy_drop_points": max_accuracy_drop, "max_disagreement": max_disagreement}
    return make_finding(
        "QUANTIZATION_DROP", "INT8 model disagrees with FP32: " + "; ".join(reasons) + ".",
        evidence=evidence, where="quantization",
        fix="Calibrate on more representative data (a few hundred real inputs): "
            "convdoctor.fix.quantize_int8(model, calibration); if it persists, keep the most "
            "sensitive layers (usually the first conv and the classifier) in float.")


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
            "convdoctor.fix.quantize_int8(model, calibration).")


def quantization_findings(metrics: dict[str, Any], *, max_accuracy_drop: float = MAX_ACCURACY_DROP_POINTS,
                          max_disagreement: float = MAX_DISAGREEMENT, min_flips: int = MIN_FLIPS,
                          max_fp32_mac_fraction: float = MAX_FP32_MAC_FRACTION) -> list[Finding]:
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
