"""``receptive_field()``: normalize -> validate -> capture -> analyze -> findings -> RFReport."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import Any

from torch._ops import OpOverloadPacket

from ..analysis.rf.core import RFAnalysis, analyze
from ..analysis.rf.findings import input_findings, level_findings, object_findings, structure_findings
from ..analysis.rf.gradient import GradientField, gradient_field
from ..analysis.rf.pyramid import pyramid_levels
from ..capture.choices import RFMethod, either
from ..capture.inputs import InputForm, InputSize, ModelInput
from ..capture.load import LoadedModel
from ..capture.once import Captures, capture_with
from ..capture.prepare import ModelLike, prepare
from ..errors import UsageError
from ..findings import Finding, make_finding
from ..results.base import sort_findings
from ..results.rf import RFLayer, RFReport


def _method(method: RFMethod | str) -> RFMethod:
    try:
        return RFMethod(method)
    except ValueError:
        raise UsageError(f"unknown method {method!r}: choose {either(RFMethod)}") from None


def parse_object_size(value: int | str | Sequence[int] | None, n_axes: int) -> tuple[int, ...] | None:
    """``64``, ``"64"``, ``"64x32"`` or ``(64, 32)`` -> one size per spatial axis.

    Raises:
        UsageError: not a positive integer per axis.
    """
    if value is None:
        return None
    if isinstance(value, str):
        parts: Sequence[Any] = value.lower().replace(",", "x").split("x")
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        sizes = tuple(int(p) for p in parts)
        if any(float(p) != int(p) for p in parts):
            raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"object size {value!r} is not an integer number of pixels (e.g. 64 or 64x32)") from None
    if len(sizes) == 1:
        sizes = sizes * n_axes
    if len(sizes) != n_axes:
        raise UsageError(f"object size {value!r} has {len(sizes)} values; the input has {n_axes} spatial axes")
    if any(s <= 0 for s in sizes):
        raise UsageError(f"object size {value!r} must be positive (pixels of the input)")
    return sizes


def _focus(analysis: RFAnalysis, layer: str | None, modules: Sequence[str]) -> RFLayer:
    if layer is None:
        # no layer with a local field (all global or unknown): report on the model's output
        found = analysis.last_feature_layer() or analysis.layer("") or next(iter(analysis.layers), None)
        if found is None:
            raise UsageError("no module output of this model depends on its input; nothing to measure")
        return found
    found = analysis.layer(layer)
    if found is not None:
        return found
    if layer in modules:
        raise UsageError(f"the output of module {layer!r} does not depend on the input; pick another --layer")
    close = difflib.get_close_matches(layer, [m for m in modules if m], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; module names are paths like layer4.1.conv2"
    raise UsageError(f"unknown layer {layer!r}{hint}")


def _measured(g: GradientField, like: RFLayer, input_shape: Sequence[int]) -> RFLayer:
    """The gradient measurement as a report entry (fields outside the input are clipped)."""
    starts, centers = g.start, []
    coverage: float | None = 1.0
    for lo, hi, start, size, n in zip(g.lo, g.hi, starts, g.size, input_shape[2:]):
        twice = None if start is None or size is None else 2 * start + size - 1
        centers.append(None if twice is None else twice // 2 if twice % 2 == 0 else twice / 2)
        coverage = None if coverage is None or lo is None or hi is None else coverage * (hi - lo + 1) / int(n)
    return RFLayer(
        name=g.layer,
        type=like.type,
        call=0,
        output_shape=g.output_shape,
        size=g.size,
        jump=g.jump,
        start=starts,
        center=tuple(centers),
        global_=g.global_,
        exact=not any(g.clipped),
        aligned=True,
        whole=False,
        uncounted=None,
        coverage=coverage,
        exceeds_input=any(g.clipped),
        leaf=like.leaf,
        first_op=like.first_op,
        last_op=like.last_op,
        clipped=g.clipped,
    )


def receptive_field(
    model: ModelLike,
    input_size: InputSize = None,
    *,
    example_input: Any = None,
    method: RFMethod | str = RFMethod.ANALYTIC,
    layer: str | None = None,
    object_size: int | str | Sequence[int] | None = None,
    extra_rules: dict[OpOverloadPacket, Any] | None = None,
    weights: str | os.PathLike[str] | None = None,
    trusted: bool = False,
) -> RFReport:
    """Receptive field (size, jump, start per axis) of every module's output.

    Args:
        model: any ``nn.Module`` or a MODEL spec (``torchvision:resnet50``...).
        input_size: ``"1x3x224x224"`` or a shape (``CxHxW`` means batch 1).
        example_input: instead of ``input_size``: a tensor, a tuple of positional args, a
            list of image tensors (detectors) or a dict of keyword args; fields are measured
            in pixels of the first tensor (of the images, for a list).
        method: ``analytic`` (every module, no computation) or ``gradient`` (the focus layer,
            measured by back-propagation through a positive float64 copy of the model).
        layer: module path the findings (and the gradient method) are about; default: the
            last module whose output still has a local field.
        object_size: object size in input pixels (``64`` or ``"64x32"``): enables
            ``RF_TOO_SMALL`` / ``RF_TOO_LARGE``.
        extra_rules: ``{aten.op: rule(node, field_of) -> Field}`` for ops without a rule.
        weights: a state_dict checkpoint for a MODEL spec (``weights_only=True``).
        trusted: a ``.pt``/``.pt2`` MODEL file you trust: loaded without vetting (it may run
            code; see :mod:`convdoctor.capture.archive`).

    Returns:
        The report; ``report.layers`` holds one entry per module call.

    Raises:
        UsageError: bad method, layer or object size, or a model without spatial ops.
    """
    rf_method = _method(method)
    loaded, call = prepare(model, input_size, example_input, weights=weights, meta=True, trusted=trusted)
    return rf_prepared(loaded, call, method=rf_method, layer=layer, object_size=object_size, extra_rules=extra_rules)


def rf_prepared(
    loaded: LoadedModel,
    call: ModelInput,
    *,
    method: RFMethod | str = RFMethod.ANALYTIC,
    layer: str | None = None,
    object_size: int | str | Sequence[int] | None = None,
    extra_rules: dict[OpOverloadPacket, Any] | None = None,
    captures: Captures | None = None,
) -> RFReport:
    """:func:`receptive_field` of a model and input already prepared (:func:`~convdoctor.capture.prepare.prepare`).

    Args:
        loaded: the model.
        call: its input.
        method: as for :func:`receptive_field`.
        layer: as for :func:`receptive_field`.
        object_size: as for :func:`receptive_field`.
        extra_rules: as for :func:`receptive_field`.
        captures: graphs already captured of this model (``check`` shares one with inspect and bench).

    Returns:
        The report.

    Raises:
        UsageError: as :func:`receptive_field`.
    """
    rf_method = _method(method)
    shape = call.primary_shape
    if shape is None or len(shape) < 3:
        raise UsageError("the first input has no spatial dims: give an input like 1x3x224x224")
    if rf_method is RFMethod.GRADIENT and call.form not in (InputForm.SIZE, InputForm.TENSOR):
        raise UsageError(
            f"the gradient method feeds the model one positional tensor; this input is {call.form.value} "
            "form: use method='analytic'"
        )
    objects = parse_object_size(object_size, len(shape) - 2)
    graph = capture_with(captures, loaded.module, call.args, call.kwargs, mode="eval", rebuild=loaded.rebuild)
    analysis = analyze(graph, extra_rules=extra_rules, input_shape=shape)
    if analysis.spatial_ops == 0 and not analysis.uncounted_ops:
        # with uncounted ops the spatial ops may sit behind them: report "unknown", named, instead
        raise UsageError(
            "the model has no spatial op (convolution, pooling, padding, interpolation): "
            "a receptive field is defined for CNNs only"
        )
    focus = _focus(analysis, layer, list(graph.modules))
    layers = analysis.layers
    if rf_method is RFMethod.GRADIENT:
        focus = _measured(gradient_field(loaded.module, shape, focus.name), focus, shape)
        layers = (focus,)
    levels = pyramid_levels(graph, analysis)
    findings: list[Finding] = [*structure_findings(analysis), *input_findings(analysis, focus)]
    if objects is not None and levels and layer is None:  # a pyramid: which level sees the object
        findings += level_findings(analysis, levels, objects)
    elif objects is not None:
        findings += object_findings(analysis, focus, objects)
    if graph.fallback_reason is not None:
        findings.append(
            make_finding(
                "CAPTURE_FALLBACK",
                f"The model ran one real CPU forward instead of a meta one: {graph.fallback_reason}.",
                evidence={"reason": graph.fallback_reason},
            )
        )
    return RFReport(
        model=loaded.spec,
        findings=sort_findings(findings),
        input_shape=tuple(shape),
        method=rf_method.value,
        focus=focus.name,
        object_size=objects,
        layers=layers,
        uncounted_ops=dict(analysis.uncounted_ops),
        misaligned_at=analysis.misaligned_at,
        levels=levels,
    )
