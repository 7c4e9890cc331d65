"""Report objects: frozen data with ``to_dict()`` (the JSON document of DESIGN.md).

One module per verb: its report class (derived from :class:`ReportBase`) and the row types
the report holds (``LayerRow``, ``RFLayer``, ``LayerOption``...). Results are data: they import
``findings`` and nothing that computes, so analyses produce these rows and renderers read them
(``tests/test_layering.py``).
"""

from .base import ReportBase

__all__ = ["ReportBase"]
