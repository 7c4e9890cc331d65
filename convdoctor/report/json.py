"""JSON renderer: ``report.to_dict()`` as one document."""

from __future__ import annotations

import json

from ..results.base import ReportBase, json_safe


def render(report: ReportBase) -> str:
    """One JSON document, the same dict as ``report.to_dict()``."""
    return json.dumps(json_safe(report.to_dict()), indent=2, allow_nan=False)
