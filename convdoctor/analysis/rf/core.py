"""Analytic receptive field of every tensor of a captured graph.

One linear pass over :class:`~convdoctor.graph.Graph` nodes applies each op's rule from
``RF_RULES`` (see :mod:`._field` for the conventions, :mod:`.window_rules` and
:mod:`.shape_rules` for the rules). Each op is

* **counted** by its rule (elementwise ops PyTorch tags ``pointwise`` included),
* **independent** of the input's values (``zeros_like``...: the result carries no field), or
* **uncounted**: no rule, so every value downstream has an unknown field, reported with
  the op's name (``RF_UNCOUNTED``), never passed through silently.

Each module call reports the field of its (first) output, in pixels of the model's first
input, per spatial axis, not clipped to the input.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._ops import OpOverloadPacket

from ...graph import Graph, ModuleCall, TensorInfo
from ...results.rf import Coord, RFLayer
from . import reduction_rules, shape_rules, window_rules  # noqa: F401  (reduction_rules registers its rules)
from ._alias import Aliases
from ._field import (
    Field,
    Num,
    Pieces,
    hull_at,
    input_field,
    make_global,
    plain_dim,
    uncounted,
)
from ._registry import RF_RULES, RFRule, rf_rule

__all__ = ["RF_RULES", "RFAnalysis", "analyze", "field_attributes", "field_numbers", "rf_rule"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RFAnalysis:
    """Everything the analytic pass found.

    Attributes:
        input_shape: shape of the model input the fields are measured in.
        layers: one entry per module call, in execution order (parents before children).
        uncounted_ops: op packet -> how many times it had no rule.
        misaligned_at: module paths where paths with different jumps or centres merged.
        spatial_ops: how many ops slid a window (conv, pool, pad, interpolation).
        fields: the field of every value, keyed by ``(node, out)``.
    """

    input_shape: tuple[int, ...]
    layers: tuple[RFLayer, ...]
    uncounted_ops: dict[str, int]
    misaligned_at: tuple[str, ...]
    spatial_ops: int
    fields: dict[tuple[int, int], Field] = field(repr=False, default_factory=dict)

    def layer(self, name: str) -> RFLayer | None:
        """The first call of the module ``name``, or None."""
        return next((layer for layer in self.layers if layer.name == name), None)

    def last_feature_layer(self) -> RFLayer | None:
        """The last module (outermost on ties) whose output still has a local spatial field."""
        best: RFLayer | None = None
        for layer in self.layers:
            if not layer.local or not _spatial_output(layer):
                continue
            if best is None or (layer.last_op, -layer.first_op) > (best.last_op, -best.first_op):
                best = layer
        return best


def _spatial_output(layer: RFLayer) -> bool:
    return len(layer.output_shape) >= 3 and any(int(n) > 1 for n in layer.output_shape[2:])


def _is_pointwise(op: str) -> bool:
    """PyTorch's own ``pointwise`` tag on the overload (an elementwise op)."""
    try:
        namespace, packet, overload = op.split(".")
        fn = getattr(getattr(getattr(torch.ops, namespace), packet), overload)
    except (ValueError, AttributeError, RuntimeError):
        return False
    return torch.Tag.pointwise in fn.tags


def _image_field(shape: Sequence[int], batched: Sequence[int] | None) -> Field:
    """The input's field; an unbatched image ``(C, *spatial)`` (a detector's list) drops the batch dim."""
    if batched is not None and len(shape) == len(batched) - 1:
        f = input_field((1, *shape))
        return f.with_(layout=f.layout[1:])
    return input_field(shape)


def _propagate(
    graph: Graph, rules: dict[str, RFRule], input_shape: Sequence[int] | None = None
) -> tuple[dict[tuple[int, int], Field], Counter[str], list[str], int]:
    image = graph.inputs[0]
    fields: dict[tuple[int, int], Field] = {image.producer: _image_field(image.shape, input_shape)}
    missing: Counter[str] = Counter()
    misaligned_at: list[str] = []
    spatial = 0
    window_module = window_rules.__name__

    def field_of(t: TensorInfo) -> Field | None:
        return fields.get(t.producer)

    aliases = Aliases()
    for node in graph.nodes:
        aliases.record(node)
        ins = [f for f in (fields.get(t.producer) for t in node.inputs) if f is not None]
        if not ins:
            continue
        bad = next((f for f in ins if f.uncounted), None)
        rule = rules.get(node.packet)
        if rule is None and _is_pointwise(node.op):
            rule = shape_rules.pointwise_rule
        if bad is not None:
            out: Any = bad
        elif rule is None and all(not any(f.axes) for f in ins):
            # only global paths reach this op: whatever it does, every unit still sees the whole input
            out = [make_global(ins[0], tuple(plain_dim(n) for n in t.shape)) for t in node.outputs]
        elif rule is None:
            missing[node.packet] += 1
            out = uncounted(f"no receptive-field rule for {node.packet}")
        else:
            spatial += rule.__module__ == window_module
            try:
                out = rule(node, field_of)
            except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError) as exc:
                log.debug("RF rule for %s failed: %s", node.op, exc)
                missing[node.packet] += 1
                out = uncounted(f"the receptive-field rule for {node.packet} failed: {exc}")
            else:
                if any(g is not None and g.uncounted for g in (out if isinstance(out, (list, tuple)) else [out])):
                    missing[node.packet] += 1  # the rule met a case it cannot follow: the op is named
        outs = list(out) if isinstance(out, (list, tuple)) else [out] * len(node.outputs)
        for i, f in enumerate(outs[: len(node.outputs)]):
            if f is not None:
                fields[(node.index, i)] = f
        first = outs[0] if outs else None
        aliases.write_back(node, first, fields)
        if first is not None and first.misaligned and not any(f.misaligned for f in ins):
            misaligned_at.append(node.module)
    return fields, missing, misaligned_at, spatial


def _pixels(lo: Num, hi: Num) -> tuple[int, int]:
    """The input pixels inside a bound ``[lo, hi]`` that fractional rules (upsampling) can give.

    A field is a set of whole pixels, so a fractional bound narrows to the pixels it holds
    (``ceil(lo)..floor(hi)``), still an outer bound; a bound narrower than one pixel keeps
    the nearest one.
    """
    first, last = math.ceil(lo), math.floor(hi)
    if last < first:
        first = last = round((lo + hi) / 2)
    return int(first), int(last)


def _plain_num(v: Num) -> int | float:
    """A plain int (a float only for a jump finer than one input pixel: upsampled outputs)."""
    return int(v) if v == int(v) else float(v)


def field_attributes(f: Field, input_shape: Sequence[int]) -> dict[str, Any]:
    """The :class:`RFLayer` fields a field sets: its numbers (:func:`field_numbers`) and its flags."""
    nums = field_numbers(f, input_shape)
    return {
        "size": nums["size"],
        "jump": nums["jump"],
        "start": nums["start"],
        "center": nums["center"],
        "global_": f.global_,
        "exact": f.exact,
        "aligned": not f.misaligned,
        "whole": f.whole,
        "uncounted": f.uncounted,
        "coverage": nums["coverage"],
        "exceeds_input": nums["exceeds_input"],
    }


def field_numbers(f: Field, input_shape: Sequence[int]) -> dict[str, Any]:
    """Size, jump, start and centre per axis of a field, for its central unit.

    The central unit along an axis is unit ``(n-1)//2`` of the ``n`` units the value has
    along it (unit 0 when the axis is not a dim of the value any more). Values are plain
    Python numbers: ``size`` and ``start`` ints (whole pixels, see :func:`_pixels`),
    ``jump`` an int unless finer than a pixel, ``center`` an int or a half.
    """
    n_axes = len(input_shape) - 2
    size: list[Coord | None] = []
    jump: list[Coord | None] = []
    start: list[Coord | None] = []
    center: list[Coord | None] = []
    coverage: float | None = 1.0
    exceeds = False
    for a in range(n_axes):
        pieces: Pieces = f.axes[a] if not f.uncounted else ()
        c = (f.axis_size(a) - 1) // 2 if not f.uncounted else 0
        mid, zero = hull_at(pieces, c), hull_at(pieces, 0)
        if mid is None or zero is None:
            for values in (size, jump, start, center):
                values.append(None)
            coverage = None
            continue
        lo, hi = _pixels(*mid)
        z_lo, z_hi = _pixels(*zero)
        size.append(hi - lo + 1)
        jump.append(_plain_num(max((p.jump if p.jump >= 0 else -p.jump) for p in pieces)))
        start.append(z_lo)
        center.append((z_lo + z_hi) // 2 if (z_lo + z_hi) % 2 == 0 else (z_lo + z_hi) / 2)
        extent = int(input_shape[2 + a])
        seen = min(hi, extent - 1) - max(lo, 0) + 1
        if coverage is not None:
            coverage *= max(0.0, float(seen)) / extent
        exceeds = exceeds or hi - lo + 1 > extent
    return {
        "size": tuple(size),
        "jump": tuple(jump),
        "start": tuple(start),
        "center": tuple(center),
        "coverage": coverage,
        "exceeds_input": exceeds,
    }


def _layers(graph: Graph, fields: dict[tuple[int, int], Field], input_shape: Sequence[int]) -> list[RFLayer]:
    parents = {p.rsplit(".", 1)[0] if "." in p else "" for p in graph.modules if p}
    calls_seen: Counter[str] = Counter()
    out: list[tuple[tuple[int, int], RFLayer]] = []
    for call in graph.calls:
        k = calls_seen[call.path]
        calls_seen[call.path] += 1
        value = _first_output(call)
        if value is None or value.producer not in fields:
            continue
        leaf = call.path not in parents
        layer = RFLayer(
            name=call.path,
            type=call.type,
            call=k,
            output_shape=tuple(value.shape),
            **field_attributes(fields[value.producer], input_shape),
            leaf=leaf,
            first_op=call.first,
            last_op=call.last,
        )
        out.append(((call.first, -call.last), layer))
    out.sort(key=lambda item: item[0])
    return [layer for _, layer in out]


def _first_output(call: ModuleCall) -> TensorInfo | None:
    return call.outputs[0] if call.outputs else None


def analyze(
    graph: Graph, *, extra_rules: dict[OpOverloadPacket, RFRule] | None = None, input_shape: Sequence[int] | None = None
) -> RFAnalysis:
    """Propagate receptive fields through a captured graph.

    Args:
        graph: the capture of the model (its first input is the image).
        extra_rules: user rules by op packet, overriding the built-in ones.
        input_shape: the batched input shape ``(N, C, *spatial)``; when the graph's first
            input has one dim less (a detector's list of ``(C, H, W)`` images), that input
            is read as one unbatched image.

    Returns:
        The per-module fields, the ops without a rule, and where paths merged misaligned.

    Raises:
        ValueError: the graph has no input with spatial dims (N, C, *spatial).
    """
    if not graph.inputs or len(graph.inputs[0].shape) < 3:
        raise ValueError("the model's first input has no spatial dims (expected N x C x H x W)")
    fields, missing, misaligned_at, spatial = _propagate(graph, RF_RULES.merged(extra_rules), input_shape)
    shape = graph.inputs[0].shape
    if input_shape is not None and len(shape) == len(input_shape) - 1:
        shape = (1, *shape)
    return RFAnalysis(
        input_shape=tuple(shape),
        layers=tuple(_layers(graph, fields, shape)),
        uncounted_ops=dict(missing),
        misaligned_at=tuple(dict.fromkeys(misaligned_at)),
        spatial_ops=spatial,
        fields=fields,
    )
