"""``ModelReport``: what ``inspect`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..analysis.layers import LayerRow
from ..graph import Graph
from .base import ReportBase


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
        graph: the captured graph (not serialised).
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
    graph: Graph | None = field(default=None, repr=False, compare=False)

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
