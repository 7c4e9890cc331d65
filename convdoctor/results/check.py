"""``Report``: what ``check`` returns, one run of every verb on one model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .base import ReportBase


@dataclass(frozen=True)
class Report(ReportBase):
    """inspect + rf + audit (+ bench, + a Monitor's run) in one document.

    Attributes:
        parts: verb -> its report (``inspect``, ``rf``, ``audit``, ``bench``, ``monitor``).
        skipped: verb -> why it did not run.
        seconds: verb -> wall time it took.
    """

    kind: ClassVar[str] = "check"
    parts: dict[str, ReportBase] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def _payload(self) -> dict[str, Any]:
        doc: dict[str, Any] = {name: part.to_dict() for name, part in self.parts.items()}
        doc["skipped"] = dict(self.skipped)
        doc["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        return doc
