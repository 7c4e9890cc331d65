"""The audit check registry: every check is ``check(ctx) -> list[Finding]``, listed by name.

A check module registers its function with ``@register_check("name", summary=..., codes=...,
order=...)``; ``audit()`` runs them by ``order`` (modes first, since it explains the others; the slow
exports last), each inside the same model guard.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..findings import Finding

if TYPE_CHECKING:
    from .context import CheckContext

#: A check: reads the context, writes its numbers into ``ctx.evidence``, returns findings.
CheckFn = Callable[["CheckContext"], list[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    """One registered check.

    Attributes:
        name: registry name (used by ``checks=`` and ``--checks``).
        fn: the check function.
        summary: one line on what it verifies.
        codes: the finding codes it can raise.
        order: run position (lower first; ties keep registration order).
    """

    name: str
    fn: CheckFn
    summary: str
    codes: tuple[str, ...]
    order: int = 100


CHECKS: dict[str, CheckSpec] = {}


def register_check(name: str, *, summary: str, codes: Iterable[str], order: int = 100) -> Callable[[CheckFn], CheckFn]:
    """Register ``fn`` as the audit check ``name``.

    Args:
        name: lower_snake registry name; must be new.
        summary: one line on what the check verifies.
        codes: the finding codes the check can raise (each must be in ``FINDING_CODES``).
        order: run position, lower first (the built-in checks use 10..60).

    Raises:
        ValueError: duplicate name or unknown code (a programming error, raised at import).
    """
    from ..findings import FINDING_CODES

    codes = tuple(codes)
    unknown = [c for c in codes if c not in FINDING_CODES]
    if unknown:
        raise ValueError(f"check {name!r} declares unregistered codes {unknown}")

    def deco(fn: CheckFn) -> CheckFn:
        if name in CHECKS:
            raise ValueError(f"audit check {name!r} is already registered")
        CHECKS[name] = CheckSpec(name, fn, summary, codes, order)
        return fn

    return deco


def _ordered() -> list[CheckSpec]:
    return sorted(CHECKS.values(), key=lambda spec: spec.order)  # sorted() is stable: ties keep insertion


def list_checks() -> list[str]:
    """Names of every registered audit check, in run order."""
    return [spec.name for spec in _ordered()]


def select_checks(names: str | Iterable[str] | None) -> list[CheckSpec]:
    """Resolve ``checks=`` (None = all, a name, a comma-separated string or names) to specs.

    Raises:
        UsageError: an unknown name (the message lists the valid ones and close matches).
    """
    if names is None:
        return _ordered()
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    wanted = [n.strip() for n in names if n.strip()]
    if not wanted:
        raise UsageError(f"no audit check named; choose from {', '.join(list_checks())}")
    for n in wanted:
        if n not in CHECKS:
            close = difflib.get_close_matches(n, list(CHECKS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"unknown audit check {n!r}{hint}; choose from {', '.join(list_checks())}")
    return [spec for spec in _ordered() if spec.name in wanted]
