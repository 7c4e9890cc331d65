"""Pipelines behind the public verbs: normalize -> validate -> capture -> analyze -> report."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch._ops import OpOverloadPacket

from .analysis.flops import FlopRule, count_flops
from .analysis.layers import layer_rows
from .analysis.lints import run_lints
from .analysis.memory import activation_memory
from .analysis.params import count_params
from .capture.inputs import as_args, make_input, parse_input_spec
from .capture.load import LoadedModel, load_model
from .capture.trace import capture
from .errors import UsageError
from .results.base import sort_findings
from .results.inspect import ModelReport


class Mode(str, enum.Enum):
    """Which behaviour inspect assumes: inference (``eval``) or training (``train``)."""

    EVAL = "eval"
    TRAIN = "train"


def resolve_model(model: nn.Module | str | LoadedModel) -> LoadedModel:
    """Accept a module, a MODEL spec string, or an already loaded model."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return load_model(model, meta=True)
    if isinstance(model, nn.Module):
        return LoadedModel(model, type(model).__name__)
    raise UsageError(f"expected an nn.Module or a MODEL spec string, got {type(model).__name__}")


def resolve_inputs(
    loaded: LoadedModel, input_size: str | Sequence[int] | None, example_input: Any
) -> tuple[tuple[Any, ...], tuple[tuple[int, ...], ...]]:
    """Example positional args and their shapes, from an example or a size."""
    if example_input is not None and input_size is not None:
        raise UsageError("give input_size or example_input, not both")
    if example_input is not None:
        args = as_args(example_input)
    else:
        shape = parse_input_spec(input_size) or loaded.default_input_size
        if shape is None:
            raise UsageError("the input size is unknown: pass input_size (e.g. 1x3x224x224) or example_input")
        args = (make_input(shape, device="meta"),)
    shapes = tuple(tuple(int(d) for d in a.shape) for a in args if isinstance(a, torch.Tensor))
    return args, shapes


def inspect(
    model: nn.Module | str | LoadedModel,
    input_size: str | Sequence[int] | None = None,
    *,
    example_input: Any = None,
    dtype: torch.dtype | None = None,
    mode: Mode | str = Mode.EVAL,
    extra_rules: dict[OpOverloadPacket, FlopRule] | None = None,
) -> ModelReport:
    """Shapes, parameters, MACs, memory and lints of a model, without computing anything.

    Args:
        model: any ``nn.Module`` or a MODEL spec (``torchvision:resnet50``, ``pkg.mod:factory``...).
        input_size: ``"1x3x224x224"`` or a shape tuple (``CxHxW`` means batch 1).
        example_input: a tensor or tuple of tensors instead of ``input_size``.
        dtype: analyse as if parameters and inputs were this floating dtype.
        mode: ``eval`` assumes inference (the default; train-mode BN/dropout are findings),
            ``train`` analyses the training-mode forward.
        extra_rules: ``{aten.op: rule(node) -> OpCost}`` for ops we have no rule for.

    Returns:
        The report; ``report.totals`` holds the DESIGN totals.
    """
    mode = Mode(mode)
    loaded = resolve_model(model)
    args, shapes = resolve_inputs(loaded, input_size, example_input)
    graph = capture(loaded.module, args, mode=mode.value, dtype=dtype, rebuild=loaded.rebuild)
    flops = count_flops(graph, extra_rules)
    memory = activation_memory(graph)
    params = count_params(graph)
    # a model a factory just built is in training mode by construction: not a finding
    findings = run_lints(graph, flops, inference=mode is Mode.EVAL and not loaded.fresh)
    totals = {
        "params": params.params,
        "trainable_params": params.trainable_params,
        "macs": flops.macs,
        "flops": flops.flops,
        "other_flops": flops.other_flops,
        "param_bytes": params.param_bytes,
        "buffer_bytes": params.buffer_bytes,
        "activation_bytes": memory.activation_bytes,
        "peak_activation_bytes": memory.peak_activation_bytes,
        "uncounted_op_calls": sum(flops.uncounted.values()),
    }
    return ModelReport(
        model=loaded.spec,
        findings=sort_findings(findings),
        input_shapes=shapes,
        output_shapes=tuple(t.shape for t in graph.outputs),
        mode=mode.value,
        totals=totals,
        uncounted_ops=dict(flops.uncounted),
        layers=layer_rows(graph, flops, memory, params),
        size_as=dict(params.size_as),
        bytes_by_dtype=dict(params.bytes_by_dtype),
        graph=graph,
    )
