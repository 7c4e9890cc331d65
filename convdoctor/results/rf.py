"""``RFReport``: what ``receptive_field`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..analysis.rf.core import RFLayer
from .base import ReportBase


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
    """

    kind: ClassVar[str] = "rf"
    input_shape: tuple[int, ...] = ()
    method: str = "analytic"
    focus: str = ""
    object_size: tuple[int, ...] | None = None
    layers: tuple[RFLayer, ...] = ()
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    misaligned_at: tuple[str, ...] = ()

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
        }
