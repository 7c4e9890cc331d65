"""INT8 vs FP32: what quantization cost in accuracy and bought in size and speed.

:func:`compare_int8` is the one comparison every caller uses: the audit's ``quantization``
check, ``convdoctor demo``, the benchmark and the docs.

Sizes are bytes of a file on disk: ``torch.save`` of the model's ``state_dict`` (oneDNN
prepacked int8 weights converted to dense int8 tensors first), the same format for both
models, read back by ``torch.load(weights_only=True)``. For a PT2E model that is the int8
weights, their per-channel scales and zero points, and fp32 biases.

Latency is ``convdoctor.bench``'s method (torch.utils.benchmark's loop, one call per sample,
warm-up apart). The first call of each model at each batch size is reported on its own
(``*_first_call_ms``): for an AOTInductor-compiled int8 model it holds the compilation, paid
once per batch size and then cached on disk, or the load of the cached package.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._guard import preserve_model_state
from ..errors import UsageError

__all__ = ["compare_int8", "serialized_bytes"]

#: Largest forward when computing agreement (bounds memory on large sets).
_MAX_EVAL_CHUNK = 256


def serialized_bytes(model: nn.Module) -> int:
    """Bytes on disk of ``torch.save(model.state_dict())``, mkldnn tensors made dense first.

    Args:
        model: any module (fp32, PT2E-lowered or compiled, eager-quantized).

    Returns:
        The size of the written file.
    """
    state = {
        k: (v.to_dense() if isinstance(v, torch.Tensor) and v.is_mkldnn else v) for k, v in model.state_dict().items()
    }
    with tempfile.TemporaryDirectory(prefix="convdoctor-size-") as tmp:
        path = os.path.join(tmp, "state.pt")
        torch.save(state, path)
        return os.path.getsize(path)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise UsageError(
            "compare_int8 needs models that return one (N, classes) tensor; "
            f"got {type(out).__name__}{'' if not isinstance(out, torch.Tensor) else tuple(out.shape)}"
        )
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


def _outputs(model: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Logits for ``x`` in forwards of exactly ``chunk`` samples, the last one padded with copies.

    One batch shape for the whole set: a model compiled per input shape (``CompiledInt8``)
    compiles once, for a shape the latency timing uses too. Eval mode makes each sample's
    output independent of the others in its batch, so the padding changes no kept row.
    """
    device = _device(model)
    outs = []
    with preserve_model_state(model), torch.no_grad():
        _eval_flags(model)
        for part in torch.split(x, chunk):
            n = part.shape[0]
            padded = part if n == chunk else part[torch.arange(chunk) % n]
            outs.append(_logits(model, padded.to(device))[:n].cpu())
    return torch.cat(outs)


def _accuracy_metrics(ref: torch.Tensor, q: torch.Tensor, y: torch.Tensor | None) -> dict[str, Any]:
    n = int(ref.shape[0])
    flips = int((ref.argmax(1) != q.argmax(1)).sum())
    err = (ref - q).abs()
    out: dict[str, Any] = {
        "n_samples": n,
        "flips": flips,
        "top1_agreement": 1 - flips / n,
        "disagreement": flips / n,
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "max_abs_output": float(ref.abs().max()),
    }
    if y is not None:
        acc_fp32 = float((ref.argmax(1) == y).float().mean())
        acc_int8 = float((q.argmax(1) == y).float().mean())
        out |= {
            "accuracy_fp32": acc_fp32,
            "accuracy_int8": acc_int8,
            "accuracy_drop_points": 100.0 * (acc_fp32 - acc_int8),
        }
    return out


def _latency(
    fp32_model: nn.Module,
    int8_model: nn.Module,
    x: torch.Tensor,
    batch_sizes: Sequence[int],
    threads: int,
    min_run_time: float,
) -> dict[str, Any]:
    from ..bench.timing import measure  # torch.utils.benchmark is imported when timing, not at import

    rows = {}
    for b in batch_sizes:
        row: dict[str, Any] = {"warnings": []}
        for name, model in (("fp32", fp32_model), ("int8", int8_model)):
            device = _device(model)
            xb = x[torch.arange(b) % x.shape[0]].to(device)
            with preserve_model_state(model), torch.no_grad():
                _eval_flags(model)
                res = measure(
                    functools.partial(model, xb),
                    batch_size=b,
                    threads=threads,
                    device=device.type,
                    warmup=3,
                    min_samples=10,
                    min_run_time=min_run_time,
                    max_run_time=max(10 * min_run_time, 2.0),
                )
            row[f"{name}_ms"] = res.median_ms
            row[f"{name}_first_call_ms"] = res.first_call_ms
            row["warnings"] += [f"{name}: {w}" for w in res.warnings]
        row["ratio"] = row["int8_ms"] / row["fp32_ms"]
        rows[str(b)] = row
    return rows


def compare_int8(
    fp32_model: nn.Module,
    int8_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    threads: int | None = None,
    min_run_time: float = 0.5,
    latency: bool = True,
) -> dict[str, Any]:
    """Measure an INT8 model against its FP32 original on the same inputs.

    Both models run in eval mode under ``torch.no_grad``; their ``training`` flags and
    hooks are restored afterwards and no weight is written.

    Args:
        fp32_model: the original model.
        int8_model: its quantized version (``quantize_int8(...).model``, a ``quantize_dynamic``
            model...); both return ``(N, classes)`` logits.
        x: evaluation inputs ``(N, ...)`` on CPU.
        y: class labels ``(N,)``; adds accuracies and ``accuracy_drop_points``.
        batch_sizes: batch sizes to time (inputs cycled from ``x``); agreement is computed in
            forwards of the largest (at most 256), so a compiled model sees no other shape.
        threads: intra-op threads for timing (default: the current setting).
        min_run_time: seconds of samples per model and batch size.
        latency: False skips timing (the slow part).

    Returns:
        ``n_samples``, ``flips``, ``top1_agreement``, ``disagreement``, ``max_abs_error``,
        ``mean_abs_error``, ``max_abs_output``; with ``y`` ``accuracy_fp32``,
        ``accuracy_int8``, ``accuracy_drop_points`` (fp32 minus int8, in points);
        ``size_fp32_bytes``, ``size_int8_bytes``, ``size_ratio`` (int8 / fp32); with
        ``latency`` ``threads`` and ``latency`` ``{batch: {fp32_ms, int8_ms, ratio,
        fp32_first_call_ms, int8_first_call_ms, warnings}}`` (warm medians; ratio is int8 /
        fp32, below 1 is faster; the first calls are the cold ones, compilation included).

    Raises:
        UsageError: empty inputs, labels that do not match them, or outputs that are not logits.
    """
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] == 0:
        raise UsageError("compare_int8 needs a non-empty (N, ...) input tensor")
    if y is not None and (y.dim() != 1 or y.shape[0] != x.shape[0]):
        raise UsageError(f"targets have shape {tuple(y.shape)} for {x.shape[0]} inputs; pass one label per input")
    x = x.detach().cpu()
    chunk = min(max(batch_sizes, default=_MAX_EVAL_CHUNK), _MAX_EVAL_CHUNK, x.shape[0])
    metrics = _accuracy_metrics(
        _outputs(fp32_model, x, chunk), _outputs(int8_model, x, chunk), None if y is None else y.detach().cpu()
    )
    size_fp32, size_int8 = serialized_bytes(fp32_model), serialized_bytes(int8_model)
    metrics |= {"size_fp32_bytes": size_fp32, "size_int8_bytes": size_int8, "size_ratio": size_int8 / size_fp32}
    if latency:
        threads = threads or torch.get_num_threads()
        metrics |= {
            "threads": threads,
            "latency": _latency(fp32_model, int8_model, x, batch_sizes, threads, min_run_time),
        }
    return metrics
