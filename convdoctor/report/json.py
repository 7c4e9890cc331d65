"""JSON renderer: ``report.to_dict()`` as one document."""

from __future__ import annotations

import json
import math
from typing import Any

from ..results.base import ReportBase


def _clean(value: Any) -> Any:
    """NaN and Inf are not JSON: write them as strings so the document stays parseable."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def render(report: ReportBase) -> str:
    """One JSON document, the same dict as ``report.to_dict()``."""
    return json.dumps(_clean(report.to_dict()), indent=2, allow_nan=False)
