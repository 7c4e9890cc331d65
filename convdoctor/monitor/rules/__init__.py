"""Pure monitor rules: ``rule(window) -> Finding | None``, one per finding code.

Each rule reads a :class:`~convdoctor.monitor.window.Window` (numbers only: no model, no
tensors), fires on named, documented thresholds (the module constants of ``loss.py``,
``gradients.py`` and ``batchnorm.py``) and returns a finding with the evidence in numbers
and the fix. The monitor decides when a finding is new (once per episode).
"""

from __future__ import annotations

from ...findings import Finding
from ..window import Window
from . import batchnorm, gradients, loss  # noqa: F401  (each registers its rules)
from ._registry import RULES, Rule, rule


def list_rules() -> list[str]:
    """The finding codes that have a rule, sorted."""
    return sorted(RULES)


def get_rule(code: str) -> Rule:
    """The rule for one code (KeyError names the registered codes)."""
    try:
        return RULES[code]
    except KeyError:
        raise KeyError(f"no monitor rule for {code!r}; registered: {', '.join(list_rules())}") from None


def evaluate(window: Window) -> dict[str, Finding]:
    """Run every rule on the window; return the findings that fire, by code."""
    out = {}
    for code in list_rules():
        found = RULES[code](window)
        if found is not None:
            out[code] = found
    return out


__all__ = ["RULES", "Rule", "evaluate", "get_rule", "list_rules", "rule"]
