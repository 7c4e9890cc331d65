"""``ModelReport``: what ``inspect`` returns, and its per-module row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import ReportBase


@dataclass(frozen=True)
class LayerRow:
    """One module, its costs rolled up over its sub-modules.

    Attributes:
        name: module path (``""`` for the root).
        type: class name.
        depth: nesting depth (root 0).
        output_shape: shape of its first output on its last call (None when it never ran).
        calls: how many times it ran.
        params: unique parameters in it and below.
        macs: multiply-accumulates of its ops.
        other_flops: non-MAC FLOPs of its ops.
        activation_bytes: bytes its ops allocated.
        uncounted: op calls with no cost rule inside it.
        training: its ``training`` flag in the user's model.
    """

    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...] | None
    calls: int
    params: int
    macs: int
    other_flops: int
    activation_bytes: int
    uncounted: int
    training: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON row (DESIGN keys name, type, output_shape, params, macs plus ours)."""
        return {
            "name": self.name,
            "type": self.type,
            "depth": self.depth,
            "output_shape": list(self.output_shape) if self.output_shape is not None else None,
            "calls": self.calls,
            "params": self.params,
            "macs": self.macs,
            "flops": 2 * self.macs,
            "other_flops": self.other_flops,
            "activation_bytes": self.activation_bytes,
            "uncounted": self.uncounted,
            "training": self.training,
        }


@dataclass(frozen=True)
class ModelReport(ReportBase):
    """Costs, shapes and lints of one model.

    Attributes:
        input_shapes: the shapes it was traced with.
        output_shapes: shapes of the model's tensor outputs.
        mode: ``eval`` (inference assumed) or ``train``.
        totals: params, trainable_params, macs, flops, other_flops, param_bytes,
            activation_bytes, peak_activation_bytes (integers), and more.
        uncounted_ops: op name -> count of calls with no cost rule.
        layers: one row per module, in definition order.
        size_as: parameter bytes if stored as fp32/fp16/int8.
        bytes_by_dtype: parameter bytes per dtype.
        training_memory: the training-step memory estimate, when asked for
            (``convdoctor.advice.TrainingMemory.to_dict()``).
    """

    kind: ClassVar[str] = "inspect"
    input_shapes: tuple[tuple[int, ...], ...] = ()
    output_shapes: tuple[tuple[int, ...], ...] = ()
    mode: str = "eval"
    totals: dict[str, int] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    layers: tuple[LayerRow, ...] = ()
    size_as: dict[str, int] = field(default_factory=dict)
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    training_memory: dict[str, Any] | None = None

    def layer(self, name: str) -> LayerRow:
        """The row of one module path.

        Raises:
            KeyError: no such module.
        """
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)

    def _payload(self) -> dict[str, Any]:
        return {
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shapes": [list(s) for s in self.output_shapes],
            "mode": self.mode,
            "totals": dict(self.totals),
            "uncounted_ops": dict(self.uncounted_ops),
            "size_as": dict(self.size_as),
            "bytes_by_dtype": dict(self.bytes_by_dtype),
            "layers": [row.to_dict() for row in self.layers],
            **({"training_memory": dict(self.training_memory)} if self.training_memory else {}),
        }
