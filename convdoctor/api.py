"""Moved: the inspect pipeline lives in :mod:`convdoctor.inspect` (issue 24).

This module only re-exports it, for code written against the old path; import from
``convdoctor.inspect`` instead.
"""

from __future__ import annotations

import warnings

from .inspect import inspect, inspect_prepared, resolve_inputs, resolve_model

__all__ = ["inspect", "inspect_prepared", "resolve_inputs", "resolve_model"]

warnings.warn("convdoctor.api moved to convdoctor.inspect: import from there", DeprecationWarning, stacklevel=2)
