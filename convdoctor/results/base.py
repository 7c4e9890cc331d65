"""The fields every report shares and their JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..findings import Finding, Severity, jsonable


def _version() -> str:
    from .. import __version__

    return __version__


@dataclass(frozen=True)
class ReportBase:
    """Common part of every report.

    Attributes:
        model: what was analysed (the MODEL spec or the class name).
        findings: the findings, most severe first.
    """

    kind: ClassVar[str] = "base"
    model: str
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: shared keys plus the verb's own (``_payload``)."""
        doc: dict[str, Any] = {
            "convdoctor": _version(),
            "kind": self.kind,
            "model": self.model,
            "findings": [f.to_dict() for f in self.findings],
        }
        doc.update(jsonable(self._payload()))
        return doc

    def _payload(self) -> dict[str, Any]:
        """The verb-specific keys; subclasses override."""
        return {}

    def has(self, code: str) -> bool:
        """Whether a finding with this code is present."""
        return any(f.code == code for f in self.findings)

    def by_severity(self, severity: Severity | str) -> list[Finding]:
        """Findings of one severity."""
        sev = Severity(severity)
        return [f for f in self.findings if f.severity == sev]


def sort_findings(findings: list[Finding] | tuple[Finding, ...]) -> tuple[Finding, ...]:
    """Most severe first; stable within a severity."""
    return tuple(sorted(findings, key=lambda f: -f.severity.rank))


def json_safe(value: Any) -> Any:
    """Plain JSON values: tensors/numpy scalars to numbers, NaN and Inf to strings (JSON has neither)."""
    import math

    value = jsonable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
