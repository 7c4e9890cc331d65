"""Pipelines behind the public verbs: normalize -> validate -> capture -> analyze -> report."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch._ops import OpOverloadPacket

from ..analysis.flops import FlopRule, count_flops
from ..analysis.layers import layer_rows
from ..analysis.lints import run_lints
from ..analysis.memory import activation_memory
from ..analysis.params import count_params
from ..capture.choices import Mode, either, parse_dtype
from ..capture.inputs import InputSize, ModelInput
from ..capture.load import LoadedModel
from ..capture.once import Captures, capture_with
from ..capture.prepare import ModelLike, model_input, prepare, prepare_model
from ..errors import UsageError
from ..results.base import sort_findings
from ..results.inspect import ModelReport


def _mode(mode: Mode | str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise UsageError(f"unknown mode {mode!r}: choose {either(Mode)}") from None


def resolve_model(
    model: ModelLike, *, weights: str | os.PathLike[str] | None = None, trusted: bool = False
) -> LoadedModel:
    """Accept a module, a MODEL spec string (built on the meta device), or an already loaded model."""
    return prepare_model(model, weights=weights, meta=True, trusted=trusted)


def resolve_inputs(
    loaded: LoadedModel, input_size: Any, example_input: Any
) -> tuple[tuple[Any, ...], tuple[tuple[int, ...], ...]]:
    """Example positional args and the shapes of every input tensor (see :func:`model_input`)."""
    call = model_input(loaded, input_size, example_input)
    return call.args, call.shapes


def inspect(
    model: ModelLike,
    input_size: InputSize = None,
    *,
    example_input: Any = None,
    dtype: torch.dtype | str | None = None,
    mode: Mode | str = Mode.EVAL,
    extra_rules: dict[OpOverloadPacket, FlopRule] | None = None,
    weights: str | os.PathLike[str] | None = None,
    trusted: bool = False,
) -> ModelReport:
    """Shapes, parameters, MACs, memory and lints of a model, without computing anything.

    Args:
        model: any ``nn.Module`` or a MODEL spec (``torchvision:resnet50``, ``pkg.mod:factory``...).
        input_size: ``"1x3x224x224"`` or a shape tuple (``CxHxW`` means batch 1; one image
            for a detector), or keyword sizes ``"pixel_values=1x3x224x224"``.
        example_input: instead of ``input_size``: a tensor, a tuple of positional args, a
            list of image tensors (detectors), or a dict of keyword args.
        dtype: analyse as if parameters and inputs were this floating dtype (a
            ``torch.dtype`` or its name).
        mode: ``eval`` assumes inference (the default; train-mode BN/dropout are findings),
            ``train`` analyses the training-mode forward.
        extra_rules: ``{aten.op: rule(node) -> OpCost}`` for ops we have no rule for.
        weights: a state_dict checkpoint for a MODEL spec (``weights_only=True``).
        trusted: a ``.pt``/``.pt2`` MODEL file you trust: loaded without vetting (it may run
            code; see :mod:`convdoctor.capture.archive`).

    Returns:
        The report; ``report.totals`` holds the DESIGN totals.
    """
    mode = _mode(mode)
    run_dtype = None if dtype is None else parse_dtype(dtype).torch
    loaded, call = prepare(model, input_size, example_input, weights=weights, meta=True, trusted=trusted)
    return inspect_prepared(loaded, call, mode=mode, dtype=run_dtype, extra_rules=extra_rules)


def inspect_prepared(
    loaded: LoadedModel,
    call: ModelInput,
    *,
    mode: Mode | str = Mode.EVAL,
    dtype: torch.dtype | None = None,
    extra_rules: dict[OpOverloadPacket, FlopRule] | None = None,
    captures: Captures | None = None,
) -> ModelReport:
    """:func:`inspect` of a model and input already prepared (:func:`~convdoctor.capture.prepare.prepare`).

    Args:
        loaded: the model.
        call: its input.
        mode: as for :func:`inspect`.
        dtype: a floating ``torch.dtype`` to analyse in, or None.
        extra_rules: as for :func:`inspect`.
        captures: graphs already captured of this model (``check`` shares one with rf and bench).

    Returns:
        The report.
    """
    mode = _mode(mode)
    graph = capture_with(
        captures, loaded.module, call.args, call.kwargs, mode=mode.value, dtype=dtype, rebuild=loaded.rebuild
    )
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
        input_shapes=call.shapes,
        output_shapes=tuple(t.shape for t in graph.outputs),
        mode=mode.value,
        totals=totals,
        uncounted_ops=dict(flops.uncounted),
        layers=layer_rows(graph, flops, memory, params),
        size_as=dict(params.size_as),
        bytes_by_dtype=dict(params.bytes_by_dtype),
    )
