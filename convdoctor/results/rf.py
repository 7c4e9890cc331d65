"""``RFReport``: what ``receptive_field`` returns, and its per-module-call entry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

from .base import ReportBase

#: A field coordinate in input pixels: an int, an exact rational where a transposed conv or a
#: resize divides the stride, a float for a half-pixel centre.
Coord = int | float | Fraction


@dataclass(frozen=True)
class RFLayer:
    """Receptive field of one module call's output, per spatial axis of the input.

    Attributes:
        name: module path (``""`` for the root).
        type: module class name.
        call: 0 for a module's first call, 1 for its second (shared modules)...
        output_shape: shape of the output the field belongs to.
        size: field size of the central unit per axis (None: no local path, or unknown).
        jump: effective stride per axis (the largest one when misaligned paths merge).
        start: first input pixel of unit 0's field per axis (``-start`` is the effective padding).
        center: centre of unit 0's field per axis; unit ``i`` is centred at ``center + i*jump``.
        global_: some path through a global reduction makes every unit see the whole input.
        exact: False when a rule could only give an outer bound (upsampling, channel slices...).
        aligned: False when merged paths have different jumps or centres.
        whole: a flatten + linear read some axis whole.
        uncounted: why the field is unknown (an op without a rule); None when known.
        coverage: fraction of the input area the central unit's local field covers.
        exceeds_input: the field is larger than the input along some axis.
        leaf: the module has no submodules.
        first_op: index of the module's first op (execution order).
        last_op: index of its last op.
        clipped: per axis, whether a *measured* field touched the input border (gradient method only).
    """

    name: str
    type: str
    call: int
    output_shape: tuple[int, ...]
    size: tuple[Coord | None, ...]
    jump: tuple[Coord | None, ...]
    start: tuple[Coord | None, ...]
    center: tuple[Coord | None, ...]
    global_: bool
    exact: bool
    aligned: bool
    whole: bool
    uncounted: str | None
    coverage: float | None
    exceeds_input: bool
    leaf: bool
    first_op: int
    last_op: int
    clipped: tuple[bool, ...] | None = None

    @property
    def local(self) -> bool:
        """The output has a known local field on every axis."""
        return self.uncounted is None and all(s is not None for s in self.size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready entry with the DESIGN keys (``name``, ``size``, ``jump``, ``start``, ``global``)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "call": self.call,
            "output_shape": list(self.output_shape),
            "size": _plain(self.size),
            "jump": _plain(self.jump),
            "start": _plain(self.start),
            "center": _plain(self.center),
            "global": self.global_,
            "exact": self.exact,
            "aligned": self.aligned,
            "whole": self.whole,
            "uncounted": self.uncounted,
            "coverage": None if self.coverage is None else round(self.coverage, 6),
            "exceeds_input": self.exceeds_input,
            "leaf": self.leaf,
        }
        if self.clipped is not None:
            doc["clipped"] = list(self.clipped)
        return doc


def _plain(values: Sequence[Coord | None]) -> list[int | float | None]:
    out: list[int | float | None] = []
    for v in values:
        if v is None or isinstance(v, int):
            out.append(v)
        elif isinstance(v, Fraction) and v.denominator == 1:
            out.append(int(v))
        else:
            out.append(round(float(v), 4))
    return out


@dataclass(frozen=True)
class RFReport(ReportBase):
    """Receptive field of every module's output, in pixels of the model's input.

    Attributes:
        input_shape: the input the fields are measured in (``N, C, *spatial``).
        method: ``analytic`` (rules over the captured graph, every module) or ``gradient``
            (autograd on a positive float64 copy, the focus layer only).
        focus: the layer the findings are about (``--layer``, else the last layer with a
            local field).
        object_size: the object size per axis the user gave, if any.
        layers: one entry per module call, parents before children, in execution order.
        uncounted_ops: op name -> how many times it had no receptive-field rule.
        misaligned_at: modules where paths with different jumps or centres merged.
        levels: the feature pyramid's levels, finest first, each named ``path[output index]``
            (empty when no module returns maps of several strides; see ``analysis.rf.pyramid``).
    """

    kind: ClassVar[str] = "rf"
    input_shape: tuple[int, ...] = ()
    method: str = "analytic"
    focus: str = ""
    object_size: tuple[int, ...] | None = None
    layers: tuple[RFLayer, ...] = ()
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    misaligned_at: tuple[str, ...] = ()
    levels: tuple[RFLayer, ...] = ()

    def layer(self, name: str) -> RFLayer:
        """The first call of one module path.

        Raises:
            KeyError: no such module in the report.
        """
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def focus_layer(self) -> RFLayer | None:
        """The entry of the focus layer."""
        return next((row for row in self.layers if row.name == self.focus), None)

    def _payload(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "method": self.method,
            "layer": self.focus,
            "object_size": list(self.object_size) if self.object_size is not None else None,
            "layers": [row.to_dict() for row in self.layers],
            "uncounted_ops": dict(self.uncounted_ops),
            "misaligned_at": list(self.misaligned_at),
            "levels": [row.to_dict() for row in self.levels],
        }
