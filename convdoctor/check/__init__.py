"""The ``check`` verb: inspect + rf + audit (+ a short bench) on one model, one report.

:mod:`.pipeline` holds :func:`check`: it prepares the model once, captures each distinct call
once (:class:`convdoctor.capture.once.Captures`, shared by inspect, rf and bench), runs each
verb, skips one that cannot run with why, and merges the findings.

``convdoctor.check`` is the function; this package is reachable as
``from convdoctor.check import ...`` (see ``convdoctor/__init__.py``).
"""

from __future__ import annotations

from .pipeline import CHECK_BENCH, check

__all__ = ["CHECK_BENCH", "check"]
