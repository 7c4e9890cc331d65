"""Moved: the receptive-field pipeline lives in :mod:`convdoctor.rf` (issue 24).

This module only re-exports it, for code written against the old path; import from
``convdoctor.rf`` instead.
"""

from __future__ import annotations

import warnings

from .rf import parse_object_size, receptive_field, rf_prepared

__all__ = ["parse_object_size", "receptive_field", "rf_prepared"]

warnings.warn("convdoctor.rf_api moved to convdoctor.rf: import from there", DeprecationWarning, stacklevel=2)
