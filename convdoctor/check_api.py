"""Moved: the check pipeline lives in :mod:`convdoctor.check` (issue 24).

This module only re-exports it, for code written against the old path; import from
``convdoctor.check`` instead.
"""

from __future__ import annotations

import warnings

from .check import CHECK_BENCH, check

__all__ = ["CHECK_BENCH", "check"]

warnings.warn("convdoctor.check_api moved to convdoctor.check: import from there", DeprecationWarning, stacklevel=2)
