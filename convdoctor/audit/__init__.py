"""``audit``: will this checkpoint behave the same in production?

Runs the registered checks (:func:`list_checks`) on the model inside
``preserve_model_state``: after ``audit`` the user's ``state_dict`` is bitwise identical,
every module's ``training`` flag, hooks, thread count, grad mode and the global RNG are as
before, even when a check raises midway. A model with any module in training mode (or on
another device) is audited on a deep copy; every check's buffer updates (BatchNorm
running statistics) are undone after it.

Where each part lives: :mod:`.run` (:func:`audit`: the working model, the context, each check
under its guards), :mod:`.registry` (``@register_check``, :func:`list_checks`),
:mod:`.context` (what a check is given), one module per check (:mod:`.modes`, :mod:`.batch`,
:mod:`.determinism`, :mod:`.bn_stats`, :mod:`.export`, :mod:`.fusion`, :mod:`.quantization`),
:mod:`.data` (samples from files), :mod:`.incident` (the BN-in-train-mode incident table).
"""

from __future__ import annotations

from .data import AuditData, load_data
from .incident import incident_table
from .registry import list_checks
from .run import audit

__all__ = ["AuditData", "audit", "incident_table", "list_checks", "load_data"]
