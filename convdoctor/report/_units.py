"""Human units for numbers in tables (exact integers stay in JSON)."""

from __future__ import annotations

import math


def _3sig(x: float) -> str:
    """Three significant figures without scientific notation (999.7 -> "1000", not "1e+03")."""
    if x == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{round(x, digits):.{digits}f}"


def si(n: float, unit: str = "") -> str:
    """``1234567`` -> ``"1.23M"``: three significant figures, SI prefixes."""
    n = float(n)
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{_3sig(n / div)}{prefix}{unit}"
    return f"{_3sig(n)}{unit}" if n != int(n) else f"{int(n)}{unit}"


def binary_bytes(n: float) -> str:
    """Bytes in KiB/MiB/GiB with three significant figures."""
    n = float(n)
    for div, prefix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= div:
            return f"{_3sig(n / div)} {prefix}"
    return f"{int(n)} B"


def shape(s: object) -> str:
    """``(1, 64, 56, 56)`` -> ``"1x64x56x56"``; None -> ``"-"``."""
    if s is None:
        return "-"
    return "x".join(str(d) for d in s)  # type: ignore[attr-defined]
