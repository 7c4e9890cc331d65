"""The audit report: one record per check, the findings, and what the checks ran on."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..findings import Finding
from .base import ReportBase


class CheckStatus(str, enum.Enum):
    """Outcome of one audit check.

    ``pass``: ran, nothing at warning or above. ``fail``: ran and raised a warning or an
    error finding. ``skipped``: did not apply (the reason is in the evidence). ``error``:
    the check itself crashed (the one-line reason is in the evidence); the model is
    restored all the same.
    """

    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CheckRecord:
    """What one check did.

    Attributes:
        name: the check's registry name.
        status: pass, fail, skipped or error.
        evidence: the numbers it measured (JSON-serialisable).
        findings: the findings it raised.
        seconds: wall time of the check.
    """

    name: str
    status: CheckStatus
    evidence: dict[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``{"name", "status", "evidence"}`` entry of DESIGN.md, plus ``seconds`` and ``codes``."""
        return {
            "name": self.name,
            "status": self.status.value,
            "evidence": self.evidence,
            "seconds": round(self.seconds, 3),
            "codes": [f.code for f in self.findings],
        }


@dataclass(frozen=True)
class AuditReport(ReportBase):
    """Result of :func:`convdoctor.audit`.

    Attributes:
        checks: one record per check that was asked for, in run order.
        input: what the checks ran on: ``shape`` of one sample batch, ``samples``,
            ``synthetic`` (no real data given), ``targets`` (labels given), ``device``.
    """

    kind: ClassVar[str] = "audit"
    checks: tuple[CheckRecord, ...] = ()
    input: dict[str, Any] = field(default_factory=dict)

    def _payload(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"checks": [c.to_dict() for c in self.checks], "input": self.input}
        if self.incident is not None:
            doc["incident"] = self.incident
        return doc

    def check(self, name: str) -> CheckRecord:
        """The record of one check by name.

        Raises:
            KeyError: the check did not run.
        """
        for record in self.checks:
            if record.name == name:
                return record
        raise KeyError(f"check {name!r} did not run; ran: {', '.join(c.name for c in self.checks)}")

    @property
    def incident(self) -> dict[str, Any] | None:
        """The accuracy-per-batch-size table (current mode vs eval), when targets were given."""
        for record in self.checks:
            table = record.evidence.get("incident")
            if isinstance(table, dict):
                return table
        return None

    @property
    def seconds(self) -> float:
        """Total wall time of the checks."""
        return sum(c.seconds for c in self.checks)
