"""The ``rf`` verb: the receptive field of every module's output, and the findings it supports.

:mod:`.pipeline` holds :func:`receptive_field` (normalize -> validate -> capture -> analyze ->
findings -> RFReport) and :func:`rf_prepared` for a model and input already prepared (``check``
hands over its shared graph). The analytic rules and the gradient method live in
:mod:`convdoctor.analysis.rf`.
"""

from __future__ import annotations

from .pipeline import parse_object_size, receptive_field, rf_prepared

__all__ = ["parse_object_size", "receptive_field", "rf_prepared"]
