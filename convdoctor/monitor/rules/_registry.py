"""The rule table: ``code -> rule(window) -> Finding | None``, filled by ``@rule(code)``."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...findings import FINDING_CODES, Finding
from ..window import Window

Rule = Callable[[Window], "Finding | None"]

#: Every registered rule, keyed by the finding code it raises.
RULES: dict[str, Rule] = {}


def rule(code: str) -> Callable[[Rule], Rule]:
    """Register a pure rule for ``code``; rejects unknown codes and duplicates."""
    if code not in FINDING_CODES:
        raise ValueError(f"rule for unknown finding code {code!r}; register it in FINDING_CODES first")

    def deco(fn: Rule) -> Rule:
        if code in RULES:
            raise ValueError(f"a rule for {code!r} is already registered ({RULES[code].__name__})")
        RULES[code] = fn
        return fn

    return deco


def fmt(x: float) -> str:
    """A number for a message: three significant digits, scientific when tiny or huge."""
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.2e}"
    return f"{x:.3g}"


def finite(values: np.ndarray) -> np.ndarray:
    """The finite entries of a 1-d array."""
    return np.asarray(values[np.isfinite(values)], dtype=np.float64)
