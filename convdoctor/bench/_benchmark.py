"""Imports ``torch.utils.benchmark`` once, quietly, before any bench module needs it.

The bench package imports this module first (``bench/__init__.py``), so ``timing``, ``probe``
and ``row`` find ``torch.utils.benchmark`` loaded and torch's one CUDA-less log line dropped.
"""

from __future__ import annotations

import logging


class _NoCudaRuntimeNote(logging.Filter):
    """Drops the one line torch logs when ``torch.utils.benchmark`` pulls in ``cpp_extension``
    on a machine without CUDA ("No CUDA runtime is found"): it would appear on every CLI run
    and says nothing about the user's model. Attached for the import only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


def _import_benchmark() -> None:
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    note = _NoCudaRuntimeNote()
    cpp_logger.addFilter(note)
    try:
        import torch.utils.benchmark  # noqa: F401
    finally:
        cpp_logger.removeFilter(note)


_import_benchmark()
