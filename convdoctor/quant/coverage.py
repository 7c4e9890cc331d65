"""How much of an eager-quantized model (``quantize_dynamic``, ``convert``) still computes in fp32.

``torch.ao.quantization.quantize_dynamic(model, {nn.Linear})`` is the usual "INT8" recipe,
and on a CNN it quantizes the classifier head only. The MACs of each quantized layer come
from its attributes and output shape; the fp32 MACs are ``convdoctor.inspect``'s counted
MACs outside the quantized layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..analysis.flops import count_flops
from ..analysis.layers import layer_rows
from ..analysis.memory import activation_memory
from ..analysis.params import count_params
from ..capture.prepare import prepare
from ..capture.trace import capture

__all__ = ["dynamic_quant_coverage", "has_quantized_layers"]

#: Module namespaces of eager-mode quantized layers (``quantize_dynamic``, ``convert``).
_QUANTIZED_NAMESPACES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized")


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


def _layer_macs(model: nn.Module, input_size: Any) -> tuple[int, int, dict[str, Any]]:
    """``inspect``'s pipeline, costs only: counted MACs, uncounted op calls, per-layer rows."""
    loaded, call = prepare(model, input_size, meta=True)
    graph = capture(loaded.module, call.args, call.kwargs, mode="eval", rebuild=loaded.rebuild)
    flops = count_flops(graph)
    rows = layer_rows(graph, flops, activation_memory(graph), count_params(graph))
    return int(flops.macs), sum(flops.uncounted.values()), {r.name: r for r in rows}


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
    total_macs, uncounted_calls, rows = _layer_macs(model, input_size)
    modules = dict(model.named_modules())
    quantized = {
        p: m
        for p, m in modules.items()
        if _is_quantized(m)
        and p in rows
        and not any(p.startswith(q + ".") for q in modules if q != p and _is_quantized(modules[q]))
    }
    int8_macs, unknown = 0, []
    for path, module in quantized.items():
        macs = _quantized_macs(module, rows[path].output_shape)
        if macs is None:
            unknown.append(path)
        else:
            int8_macs += macs
    fp32_macs = total_macs - sum(rows[p].macs for p in quantized)
    total = int8_macs + fp32_macs
    return {
        "quantized_layers": {p: type(m).__name__ for p, m in quantized.items()},
        "dynamic_only": bool(quantized) and all(".dynamic" in type(m).__module__ for m in quantized.values()),
        "int8_macs": int8_macs,
        "fp32_macs": fp32_macs,
        "fp32_mac_fraction": fp32_macs / total if total else None,
        "uncounted_quantized": unknown,
        "other_uncounted_op_calls": uncounted_calls - sum(rows[p].uncounted for p in quantized),
    }


def has_quantized_layers(model: nn.Module) -> bool:
    """Whether the model holds eager-mode quantized layers (``quantize_dynamic``, ``convert``)."""
    return any(_is_quantized(m) for m in model.modules())
