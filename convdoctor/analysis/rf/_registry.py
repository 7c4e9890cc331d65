"""``RF_RULES``: the receptive-field rule of each aten op, and what every rule shares.

A rule is ``rule(node, field_of) -> Field | None | sequence`` where ``field_of`` maps a
:class:`~convdoctor.graph.TensorInfo` to its :class:`~._field.Field` (None for
values that do not depend on the input: parameters, constants). A single result applies
to every output of the op; a sequence gives one per output. Rules only read shapes and
attributes, so they run on meta tensors and are unit-testable without a model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..._compat import op_arguments
from ...graph import OpNode, TensorInfo
from .._registry import RuleTable
from ._field import Field

FieldOf = Callable[[TensorInfo], Field | None]
RuleResult = Field | None | Sequence[Field | None]
RFRule = Callable[[OpNode, FieldOf], RuleResult]

RF_RULES: RuleTable[RFRule] = RuleTable("RF_RULES")
rf_rule = RF_RULES.register


def first_field(node: OpNode, field_of: FieldOf) -> tuple[TensorInfo, Field]:
    """The op's first tensor argument (``self``/``input``) and its field.

    Raises:
        TypeError: the first argument is not a tensor.
        ValueError: the first argument carries no field (the rule does not apply).
    """
    x = node.args[0]
    if not isinstance(x, TensorInfo):
        raise TypeError(f"{node.packet}: first argument is not a tensor")
    f = field_of(x)
    if f is None:
        raise ValueError(f"{node.packet}: the input-dependent tensor is not the first argument")
    return x, f


def ntuple(value: Any, n: int, default: Any = None) -> tuple[int, ...]:
    """``3`` or ``[3]`` -> ``(3,)*n``; ``[]``/None -> ``default`` expanded the same way."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        if default is None:
            raise ValueError("missing argument")
        value = default
    if isinstance(value, (list, tuple)):
        vals = tuple(int(v) for v in value)
        return vals * n if len(vals) == 1 else vals
    return (int(value),) * n


def norm_dim(dim: int, rank: int) -> int:
    """A possibly negative dim index, made non-negative."""
    return dim + rank if dim < 0 else dim


@functools.cache
def _schema(op: str) -> tuple[tuple[str, Any], ...]:
    """``(name, default)`` of each argument of an overload like ``aten.var.correction``."""
    namespace, packet, overload = op.split(".")
    overload_fn = getattr(getattr(getattr(torch.ops, namespace), packet), overload)
    return tuple((a.name, a.default_value if a.has_default_value() else None) for a in op_arguments(overload_fn))


def bound(node: OpNode) -> dict[str, Any]:
    """Every schema argument by name: positional, keyword, or the schema default."""
    out: dict[str, Any] = {}
    for i, (name, default) in enumerate(_schema(node.op)):
        if i < len(node.args):
            out[name] = node.args[i]
        else:
            out[name] = node.kwargs.get(name, default)
    return out
