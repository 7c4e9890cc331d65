"""Feature pyramids: the field of each level, and which level sees an object of a given size.

A detector reads objects of different sizes from different levels of a feature pyramid
(torchvision's ``backbone.fpn`` outputs P2..P6, YOLO's ``Detect`` reads P3/P4/P5), so one
field per model says little: each level has its own. A *pyramid* here is one module call
that returns several maps laid out like the input (``N, C, *spatial``) with local fields
of different jumps. When several calls qualify (a backbone's C2..C5, its FPN, the RPN head
per level), the one with the most levels wins, then the one that finishes first (the FPN
before the heads that read it), then the innermost.

Which level takes an object: the coarsest level on which the object still spans
``LEVEL_UNITS`` units (its size over the level's stride) on every axis, else the finest
level. With 8 units this is the assignment torchvision's detectors are built for (anchor
sizes 32, 64, ..., 512 px on strides 4, 8, ..., 64). Theoretical fields do not separate the
levels of an FPN (its top-down path gives the finest level the field of the coarsest), so
the field is the check on the chosen level: if it does not cover the object, the units
meant to detect it cannot see it whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ...graph import Graph, ModuleCall
from ...results.rf import RFLayer
from .core import RFAnalysis, field_attributes


def _spatial(call: ModuleCall, rank: int) -> list[int]:
    return [i for i, t in enumerate(call.outputs) if len(t.shape) == rank and any(int(n) > 1 for n in t.shape[2:])]


def _level(analysis: RFAnalysis, call: ModuleCall, i: int, like: RFLayer) -> RFLayer | None:
    f = analysis.fields.get(call.outputs[i].producer)
    if f is None or f.uncounted:
        return None
    attrs = field_attributes(f, analysis.input_shape)
    if any(s is None for s in attrs["size"]):
        return None
    name = f"{call.path}[{i}]"
    return replace(like, name=name, output_shape=tuple(call.outputs[i].shape), **{**attrs, "uncounted": None})


def _candidates(graph: Graph, analysis: RFAnalysis) -> list[tuple[ModuleCall, list[RFLayer], frozenset[Any]]]:
    rank = len(analysis.input_shape)
    by_call = {(layer.name, layer.first_op): layer for layer in analysis.layers}
    found = []
    for call in graph.calls:
        like = by_call.get((call.path, call.first))
        if like is None:
            continue
        idx = [i for i in _spatial(call, rank) if _level(analysis, call, i, like) is not None]
        levels = [lv for i in idx if (lv := _level(analysis, call, i, like)) is not None]
        if len({lv.jump for lv in levels}) >= 2:
            found.append((call, levels, frozenset(call.outputs[i].producer for i in idx)))
    return found


def _name_rank(call: ModuleCall) -> tuple[int, int, int]:
    """Among calls returning the same maps: the innermost FPN-named module, else the outermost non-root one."""
    named = "pyramid" in call.type.lower() or "fpn" in call.type.lower()
    span = call.last - call.first
    return (not named, call.path == "", span if named else -span)


def pyramid_levels(graph: Graph, analysis: RFAnalysis) -> tuple[RFLayer, ...]:
    """The levels of the model's feature pyramid, finest first (empty: no pyramid).

    Each level is reported like a layer, named ``<module path>[<output index>]``. Nested
    calls that return the same maps (``backbone`` > ``backbone.fpn`` > its extra block) are
    one pyramid, named after the FPN module when there is one, else the outermost call.
    """
    found = _candidates(graph, analysis)
    if not found:
        return ()
    _, _, maps = min(found, key=lambda c: (-len({lv.jump for lv in c[1]}), c[0].last, -c[0].first))
    call, levels, _ = min((c for c in found if c[2] == maps), key=lambda c: _name_rank(c[0]))
    return tuple(sorted(levels, key=lambda lv: (max(float(j) for j in lv.jump), lv.name)))  # type: ignore[arg-type]


#: Units an object must span on a level to be assigned to it (torchvision's anchors: 32 px
#: on stride 4 up to 512 px on stride 64, 8 units each).
LEVEL_UNITS = 8


def level_for(levels: Sequence[RFLayer], object_size: Sequence[int]) -> RFLayer | None:
    """The level an object of ``object_size`` belongs to (None: no level).

    The coarsest level on which the object spans at least :data:`LEVEL_UNITS` units on
    every axis; the finest level when the object is smaller than that everywhere.
    """
    if not levels:
        return None
    fitting = [lv for lv in levels if all(o >= LEVEL_UNITS * float(j) for o, j in zip(object_size, lv.jump))]  # type: ignore[arg-type]
    return fitting[-1] if fitting else levels[0]
