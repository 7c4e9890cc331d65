"""``Story``: everything ``convdoctor demo`` measured, for the terminal and HTML renderers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .check import Report


@dataclass(frozen=True)
class Story:
    """Everything the demo measured.

    Attributes:
        test_accuracy: the trained model's accuracy in eval mode.
        train_seconds: wall time of its training.
        report: the combined report (one part per stage) for the HTML page.
        incident: ``convdoctor.audit.incident_table`` of the model with BatchNorm left in
            training mode on shuffled test batches, plus a ``"one class"`` row (batches that
            hold one class each); every row has ``batches``, ``batch_size``, ``accuracy`` and
            ``eval_accuracy``.
        monitors: run name -> (summary line, finding codes).
        int8: model name -> its INT8 measurement (``compare_int8`` metrics plus ``params``,
            ``macs``, ``quantize_seconds``); ``{"skipped": reason}`` when INT8 could not run.
        seconds: stage -> wall time.
    """

    test_accuracy: float
    train_seconds: float
    report: Report
    incident: dict[str, Any]
    monitors: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    int8: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
