"""Findings: what is wrong, the evidence in numbers, and the fix.

``FINDING_CODES`` is the registry of every code convdoctor can raise; each one is
documented in ``docs/findings.md`` (a contract test checks both directions).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(str, enum.Enum):
    """How bad a finding is. ``error`` fails ``convdoctor check`` by default."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    def __str__(self) -> str:
        return self.value

    @property
    def rank(self) -> int:
        """Order for sorting and thresholds: error > warning > info."""
        return {"error": 2, "warning": 1, "info": 0}[self.value]


@dataclass(frozen=True)
class CodeInfo:
    """Registry entry for one finding code."""

    title: str
    severity: Severity
    raised_by: tuple[str, ...]


def _c(title: str, severity: str, *raised_by: str) -> CodeInfo:
    return CodeInfo(title, Severity(severity), raised_by)


FINDING_CODES: dict[str, CodeInfo] = {
    # inspect / audit
    "BN_TRAIN_MODE": _c("BatchNorm in training mode", "error", "inspect", "audit"),
    "DROPOUT_TRAIN_MODE": _c("Dropout active at inference", "error", "inspect", "audit"),
    "TRAIN_MODE_DIFFERS": _c("Module in training mode changes its output", "warning", "audit"),
    "BATCH_DEPENDENT_OUTPUT": _c("Output depends on the batch", "error", "audit"),
    "NONDETERMINISTIC_OUTPUT": _c("Same input, different output", "error", "audit"),
    "EXPORT_FAILED": _c("Export failed", "warning", "audit"),
    "EXPORT_MISMATCH": _c("Exported model disagrees with eager", "error", "audit"),
    "BN_STATS_UNINITIALIZED": _c("BatchNorm running stats never updated", "error", "audit"),
    "BN_STATS_INVALID": _c("BatchNorm running stats invalid", "error", "audit"),
    "BN_STATS_EXTREME": _c("BatchNorm running stats extreme", "warning", "audit"),
    "FUSION_MISMATCH": _c("Conv-BN folding changes the output", "warning", "audit"),
    "QUANTIZATION_DROP": _c("INT8 model disagrees with FP32", "error", "audit"),
    "QUANTIZATION_PARTIAL": _c("Most MACs still run in FP32", "warning", "audit"),
    "SYNTHETIC_DATA": _c("Audit ran on synthetic inputs", "info", "audit"),
    "UNCOUNTED_OPS": _c("Ops with unknown cost", "warning", "inspect"),
    "LARGE_KERNEL": _c("Large convolution kernel", "warning", "inspect"),
    "REDUNDANT_BIAS": _c("Bias before BatchNorm", "warning", "inspect"),
    "CAPTURE_FALLBACK": _c("Model ran on real tensors", "info", "inspect", "rf"),
    "DATA_DEPENDENT_COST": _c("Cost depends on the input's content", "info", "inspect"),
    "RF_TOO_SMALL": _c("Receptive field smaller than the object", "warning", "inspect", "rf"),
    "RF_TOO_LARGE": _c("Receptive field much larger than the object", "warning", "inspect", "rf"),
    "RF_MISALIGNED": _c("Merged paths with misaligned fields", "info", "rf"),
    "RF_EXCEEDS_INPUT": _c("Receptive field larger than the input", "info", "rf"),
    "RF_UNCOUNTED": _c("Receptive field unknown past some ops", "warning", "rf"),
    "RF_OBJECT_LEVEL": _c("Pyramid level that sees the object", "info", "rf"),
    # monitor
    "DEAD_RELU": _c("Dead units", "warning", "monitor"),
    "VANISHING_GRADIENT": _c("Vanishing gradients", "warning", "monitor"),
    "EXPLODING_GRADIENT": _c("Exploding gradients", "error", "monitor"),
    "LOSS_AT_CHANCE": _c("Loss stuck at chance level", "warning", "monitor"),
    "LOSS_DIVERGING": _c("Loss diverging", "error", "monitor"),
    "LOSS_OSCILLATING": _c("Loss oscillating", "warning", "monitor"),
    "NAN_LOSS": _c("NaN or Inf in loss or gradients", "error", "monitor"),
    "OVERFITTING": _c("Overfitting", "warning", "monitor"),
    "CONSTANT_PREDICTION": _c("Constant prediction", "warning", "monitor"),
    "DEGENERATE_TARGETS": _c("Targets a classifier cannot have", "warning", "monitor"),
    "BN_SMALL_BATCH": _c("BatchNorm on small batches", "warning", "monitor"),
    "FROZEN_BN_UPDATING": _c("Frozen BatchNorm still updating", "warning", "monitor"),
    "NO_GRADIENT": _c("Trainable parameters without gradient", "warning", "monitor"),
    "LR_MISMATCH": _c("Learning rate mismatched to a parameter group", "warning", "monitor"),
    "POOR_INIT": _c("Weights initialised so the net cannot learn", "error", "monitor"),
    # bench
    "BENCH_NOISY": _c("Noisy latency measurement", "warning", "bench"),
    "COLD_START_SLOW": _c("First inference much slower than warm", "info", "bench"),
    "MACS_NOT_LATENCY": _c("Fewer MACs did not mean lower latency", "info", "bench"),
}


@dataclass(frozen=True)
class Finding:
    """One problem found, with its evidence and the fix.

    Attributes:
        code: stable UPPER_SNAKE code, a key of ``FINDING_CODES``.
        severity: error, warning or info.
        title: short human title.
        message: one or two sentences with the numbers.
        evidence: the numbers behind the message (JSON-serialisable).
        fix: what to do, with the convdoctor call where one exists.
        where: module path or check name the finding is about, if any.
    """

    code: str
    severity: Severity
    title: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""
    where: str | None = None

    def __post_init__(self) -> None:
        if self.code not in FINDING_CODES:
            raise ValueError(f"unknown finding code {self.code!r}; register it in FINDING_CODES")
        object.__setattr__(self, "severity", Severity(self.severity))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the stable keys of DESIGN.md."""
        return {
            "code": self.code,
            "severity": self.severity.value,
            "title": self.title,
            "message": self.message,
            "evidence": jsonable(self.evidence),
            "fix": self.fix,
            "where": self.where,
        }


def make_finding(
    code: str,
    message: str,
    *,
    evidence: dict[str, Any] | None = None,
    fix: str = "",
    where: str | None = None,
    severity: Severity | str | None = None,
    title: str | None = None,
) -> Finding:
    """Build a finding with the registry's default title and severity.

    Args:
        code: a key of ``FINDING_CODES``.
        message: the sentence with the numbers.
        evidence: the numbers, JSON-serialisable.
        fix: what to do.
        where: module path or check name.
        severity: overrides the registry default (e.g. a stem LARGE_KERNEL is info).
        title: overrides the registry title.

    Returns:
        The finding.
    """
    info = FINDING_CODES[code]
    return Finding(
        code=code,
        severity=Severity(severity) if severity is not None else info.severity,
        title=title or info.title,
        message=message,
        evidence=dict(evidence or {}),
        fix=fix,
        where=where,
    )


def jsonable(value: Any) -> Any:
    """Convert tuples, numpy scalars and tensors' scalars to plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            return str(value)
    return value
