"""Findings about receptive fields: object size, input size, alignment, unknown ops.

The object-size rules compare the field of one layer (the one the user names, else the
last layer with a local field: what a classifier or detection head reads) with the size
of the objects the user cares about:

* ``RF_TOO_SMALL``: the field is smaller than the object on some axis
  (``size < RF_MIN_RATIO * object``): no unit of that layer can see a whole object, so
  the layer's features describe parts, and large objects get missed or split.
* ``RF_TOO_LARGE``: on every axis the field, clipped to the input, is more than
  ``RF_MAX_RATIO`` times the object: the object covers less than ``1/RF_MAX_RATIO**2`` of
  what a unit sees, so its features are dominated by context (small objects "drown").
  Feature pyramids exist for this: read small objects from a shallower layer.

Both are conservative on purpose: the *effective* field (where the gradient mass sits,
Luo et al. 2016) is smaller than the theoretical one computed here, so a field only just
above the object is not enough to see it well, and a field 4x the object is already wide.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...findings import Finding, make_finding
from ...results.rf import RFLayer
from .core import RFAnalysis
from .pyramid import LEVEL_UNITS, level_for

#: the field must at least cover the object on every axis
RF_MIN_RATIO = 1.0
#: beyond this many times the object on every axis, the object is < 1/16 of the field's area
RF_MAX_RATIO = 4.0
#: how many places RF_MISALIGNED lists in its message
_MAX_LISTED = 3


def _fmt(values: Sequence[object]) -> str:
    return "x".join(str(v) for v in values)


def _num(v: object) -> float:
    return float(v)  # type: ignore[arg-type]


def object_findings(analysis: RFAnalysis, focus: RFLayer, object_size: Sequence[int]) -> list[Finding]:
    """``RF_TOO_SMALL`` / ``RF_TOO_LARGE`` for the focus layer and an object size per axis."""
    if not focus.local:
        return []
    size = [_num(s) for s in focus.size]
    where = focus.name or "<model>"
    if any(s < RF_MIN_RATIO * o for s, o in zip(size, object_size)):
        bigger = _first_covering(analysis, object_size, after=focus)
        hint = (
            f" `{bigger.name}` (field {_fmt(bigger.size)} px) is the first layer that covers it; read features there"
            if bigger is not None
            else ""
        )
        return [
            make_finding(
                "RF_TOO_SMALL",
                f"A unit of `{where}` sees {_fmt(focus.size)} px but the object is {_fmt(object_size)} px: "
                f"no unit sees a whole object.",
                evidence={
                    "layer": focus.name,
                    "field": list(focus.size),
                    "object_size": list(object_size),
                    "ratio": [round(s / o, 3) for s, o in zip(size, object_size)],
                    "min_ratio": RF_MIN_RATIO,
                    "covering_layer": bigger.name if bigger is not None else None,
                },
                fix="Grow the field before this layer: more or dilated 3x3 convs, a stride or pool earlier, "
                f"or a smaller input scale.{hint}",
                where=focus.name,
            )
        ]
    extent = analysis.input_shape[2:]
    seen = [min(s, n) for s, n in zip(size, extent)]
    if all(s > RF_MAX_RATIO * o for s, o in zip(seen, object_size)):
        shallow = _first_covering(analysis, object_size)
        hint = f"`{shallow.name}` (field {_fmt(shallow.size)} px)" if shallow is not None else "a shallower layer"
        return [
            make_finding(
                "RF_TOO_LARGE",
                f"A unit of `{where}` sees {_fmt(focus.size)} px (clipped to the input: "
                f"{_fmt([int(s) for s in seen])}) for a {_fmt(object_size)} px object, over {RF_MAX_RATIO:g}x "
                "on every axis: the object is a small part of what each unit sees.",
                evidence={
                    "layer": focus.name,
                    "field": list(focus.size),
                    "field_in_input": seen,
                    "object_size": list(object_size),
                    "ratio": [round(s / o, 3) for s, o in zip(seen, object_size)],
                    "max_ratio": RF_MAX_RATIO,
                    "covering_layer": shallow.name if shallow is not None else None,
                },
                fix=f"Read small objects from {hint}, e.g. with a feature pyramid (torchvision.ops.FeaturePyramidNetwork), "
                "or upsample the input so objects cover more pixels.",
                where=focus.name,
            )
        ]
    return []


def level_findings(analysis: RFAnalysis, levels: Sequence[RFLayer], object_size: Sequence[int]) -> list[Finding]:
    """Which feature-pyramid level takes an object (``RF_OBJECT_LEVEL``), or that it cannot see it.

    The level comes from :func:`.pyramid.level_for` (the object spans ``LEVEL_UNITS``
    units of its stride); when that level's field is smaller than the object,
    ``RF_TOO_SMALL`` is raised on it instead, naming a coarser level that covers it.
    """
    table = [{"level": lv.name, "field": list(lv.size), "jump": list(lv.jump)} for lv in levels]
    chosen = level_for(levels, object_size)
    assert chosen is not None  # levels is not empty
    units = [round(o / float(j), 2) for o, j in zip(object_size, chosen.jump)]  # type: ignore[arg-type]
    evidence = {
        "level": chosen.name,
        "field": list(chosen.size),
        "jump": list(chosen.jump),
        "object_size": list(object_size),
        "units": units,
        "level_units": LEVEL_UNITS,
        "levels": table,
    }
    if any(_num(s) < RF_MIN_RATIO * o for s, o in zip(chosen.size, object_size)):
        covering = next((lv for lv in levels if all(_num(s) >= o for s, o in zip(lv.size, object_size))), None)
        hint = f" `{covering.name}` (field {_fmt(covering.size)} px) covers it." if covering is not None else ""
        return [
            make_finding(
                "RF_TOO_SMALL",
                f"A {_fmt(object_size)} px object belongs to pyramid level `{chosen.name}` (stride "
                f"{_fmt(chosen.jump)}, {_fmt(units)} units) but a unit there sees {_fmt(chosen.size)} px: "
                "no unit of that level sees a whole object.",
                evidence={**evidence, "min_ratio": RF_MIN_RATIO, "covering_level": covering.name if covering else None},
                fix="Grow the field of that level (more or dilated 3x3 convs in its branch or the top-down path), "
                f"or give it smaller objects (anchor sizes).{hint}",
                where=chosen.name,
            )
        ]
    return [
        make_finding(
            "RF_OBJECT_LEVEL",
            f"A {_fmt(object_size)} px object belongs to pyramid level `{chosen.name}` of {len(levels)} (stride "
            f"{_fmt(chosen.jump)}: it spans {_fmt(units)} units), whose units see {_fmt(chosen.size)} px: "
            "the whole object.",
            evidence=evidence,
            fix="Give that level anchors (or assigned targets) of this size.",
            where=chosen.name,
        )
    ]


def _first_covering(analysis: RFAnalysis, object_size: Sequence[int], after: RFLayer | None = None) -> RFLayer | None:
    """The earliest leaf layer (after ``after``, if given) whose local field covers the object."""
    for layer in analysis.layers:
        if not layer.leaf or not layer.local or (after is not None and layer.first_op <= after.first_op):
            continue
        if all(_num(s) >= o for s, o in zip(layer.size, object_size)):
            return layer
    return None


def input_findings(analysis: RFAnalysis, focus: RFLayer) -> list[Finding]:
    """``RF_EXCEEDS_INPUT``: the focus layer's field is larger than the input."""
    if not focus.local or not focus.exceeds_input:
        return []
    extent = list(analysis.input_shape[2:])
    first = next((x for x in analysis.layers if x.leaf and x.local and x.exceeds_input), focus)
    return [
        make_finding(
            "RF_EXCEEDS_INPUT",
            f"The field of `{focus.name or '<model>'}` ({_fmt(focus.size)} px) is larger than the "
            f"{_fmt(extent)} input; it first outgrows the input at `{first.name}` ({_fmt(first.size)} px). "
            "Beyond that, added depth sees more padding, not more image.",
            evidence={
                "layer": focus.name,
                "field": list(focus.size),
                "input": extent,
                "first_layer": first.name,
                "first_field": list(first.size),
            },
            fix="Expected for classification at this size. For dense prediction or large objects, "
            "feed larger inputs, or stop the backbone where the field first covers the input.",
            where=focus.name,
        )
    ]


def structure_findings(analysis: RFAnalysis) -> list[Finding]:
    """``RF_MISALIGNED`` (merged paths disagree) and ``RF_UNCOUNTED`` (ops without a rule)."""
    found: list[Finding] = []
    if analysis.misaligned_at:
        places = [p or "<model>" for p in analysis.misaligned_at]
        more = f" (and {len(places) - _MAX_LISTED} more)" if len(places) > _MAX_LISTED else ""
        found.append(
            make_finding(
                "RF_MISALIGNED",
                f"Paths with different jumps or field centres merge at {', '.join(places[:_MAX_LISTED])}{more}: "
                "the merged units mix features from shifted image positions.",
                evidence={"modules": list(analysis.misaligned_at)},
                fix="Give every branch padding = dilation*(kernel-1)/2 and the same stride before the merge "
                "(or crop/pad to realign); ignore if the offset is intended.",
                where=analysis.misaligned_at[0],
            )
        )
    if analysis.uncounted_ops:
        ops_text = ", ".join(f"{k} x{v}" for k, v in analysis.uncounted_ops.items())
        found.append(
            make_finding(
                "RF_UNCOUNTED",
                f"No receptive-field rule for {ops_text} (or none for the way the model uses them): fields "
                "downstream of them are reported as unknown.",
                evidence={"ops": dict(analysis.uncounted_ops)},
                fix="Register a rule: @convdoctor.analysis.rf.core.rf_rule(torch.ops.aten.OP) "
                "or pass extra_rules= to receptive_field(); method='gradient' still measures the field.",
            )
        )
    return found
