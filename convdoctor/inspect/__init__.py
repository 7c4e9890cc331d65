"""The ``inspect`` verb: shapes, parameters, MACs, memory and lints, without computing anything.

:mod:`.pipeline` holds the pipeline (normalize -> validate -> capture -> analyze -> report):
:func:`inspect` for any model and input form, :func:`inspect_prepared` for a model and input
already prepared and a graph that may already be captured (``check`` shares one with rf and
bench). The analyses themselves live in :mod:`convdoctor.analysis`.

``convdoctor.inspect`` is the function; this package is reachable as
``from convdoctor.inspect import ...`` (see ``convdoctor/__init__.py``).
"""

from __future__ import annotations

from .pipeline import inspect, inspect_prepared, resolve_inputs, resolve_model

__all__ = ["inspect", "inspect_prepared", "resolve_inputs", "resolve_model"]
