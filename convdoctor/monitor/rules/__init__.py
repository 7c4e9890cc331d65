"""Pure monitor rules: ``rule(window) -> Finding | None``, one per finding code.

Each rule reads a :class:`~convdoctor.monitor.window.Window` (numbers only: no model, no
tensors), fires on named, documented thresholds (the module constants of ``loss.py``,
``gradients.py``, ``batchnorm.py``, ``targets.py`` and ``init.py``) and returns a finding with the evidence in numbers
and the fix. The monitor decides when a finding is new (once per episode).
"""

from __future__ import annotations

from collections.abc import Collection

from ...findings import Finding
from ..window import Window
from . import batchnorm, gradients, init, loss, targets  # noqa: F401  (each registers its rules)
from ._causes import CAUSES, Consequences, attach, resolve
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


def run_rules(window: Window) -> dict[str, Finding]:
    """Run every rule on the window; return the findings that fire, by code."""
    out = {}
    for code in list_rules():
        found = RULES[code](window)
        if found is not None:
            out[code] = found
    return out


def evaluate(window: Window, active: Collection[str] = ()) -> tuple[dict[str, Finding], Consequences]:
    """The root findings of the window, by code: side effects of another finding are attached
    to it under ``evidence["consequences"]`` (see :mod:`._causes`).

    Args:
        window: the recorded history.
        active: codes already reported in an episode that is still going on.

    Returns:
        ``(roots, late)``: the root findings, and consequences for active roots that did not fire.
    """
    return resolve(window, run_rules, active)


__all__ = ["CAUSES", "RULES", "Rule", "attach", "evaluate", "get_rule", "list_rules", "rule", "run_rules"]
