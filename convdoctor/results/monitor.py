"""What ``Monitor.report()`` returns: the run's findings plus its summary numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import ReportBase


@dataclass(frozen=True)
class MonitorReport(ReportBase):
    """A training run's health: findings (most severe first) and the numbers behind them.

    Attributes:
        steps: training steps recorded.
        every: costly statistics were sampled every ``every`` steps.
        num_classes: classes of the output, when known.
        loss: ``{"initial", "best", "best_step", "last"}`` (the last is the median of the
            last 10 steps; NaN when not yet known).
        grad_norm: ``{"initial", "last"}`` total gradient norm.
        epochs: one dict per ``end_epoch``: ``epoch``, ``step``, ``train_loss``,
            ``train_acc``, ``val_loss``, ``val_acc``.
        events: ``{"step", "code", "where"}`` for each finding, at the step it fired.
        layers: per conv/linear layer at the last sample: ``name``, ``grad_norm``,
            ``weight_norm``, ``relative_grad``, ``units``, ``dead_units``, ``activation`` (the
            nonlinearity after it, e.g. ``relu``, ``leaky_relu``; None when none was seen).
        groups: per optimizer parameter group: ``name``, ``lr``, ``update_ratio``.
        summary: the one-line summary of the run so far.
        history: the plot data (``Monitor.history()``) when the report was built with
            ``Monitor.report(figures=True)`` or read from a Monitor JSON document; the HTML
            renderer draws the loss and gradient-norm charts from it. Not part of ``to_dict()``.
    """

    kind: ClassVar[str] = "monitor"
    steps: int = 0
    every: int = 1
    num_classes: int | None = None
    loss: dict[str, Any] = field(default_factory=dict)
    grad_norm: dict[str, Any] = field(default_factory=dict)
    epochs: tuple[dict[str, Any], ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    layers: tuple[dict[str, Any], ...] = ()
    groups: tuple[dict[str, Any], ...] = ()
    summary: str = ""
    history: dict[str, Any] | None = None

    def _payload(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "every": self.every,
            "num_classes": self.num_classes,
            "summary": self.summary,
            "loss": dict(self.loss),
            "grad_norm": dict(self.grad_norm),
            "epochs": [dict(e) for e in self.epochs],
            "events": [dict(e) for e in self.events],
            "layers": [dict(x) for x in self.layers],
            "groups": [dict(g) for g in self.groups],
        }
