"""Report objects: frozen data with ``to_dict()`` (the JSON document of DESIGN.md).

One module per verb; each report class derives from :class:`ReportBase`.
"""

from .base import ReportBase

__all__ = ["ReportBase"]
