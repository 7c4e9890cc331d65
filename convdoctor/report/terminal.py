"""Terminal renderer: composes rich renderables and returns them as a string.

Each report kind has one function in ``RENDERERS`` (filled by the ``_<kind>.py``
modules) that yields rich renderables; the findings panel is shared.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..findings import Finding, Severity
from ..results.base import ReportBase

#: kind -> function(report) -> renderables (body sections after the findings).
RENDERERS: dict[str, Callable[[Any], Iterable[Any]]] = {}

SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def renderer(kind: str) -> Callable[[Callable[[Any], Iterable[Any]]], Callable[[Any], Iterable[Any]]]:
    """Register the body renderer of one report kind."""

    def deco(fn: Callable[[Any], Iterable[Any]]) -> Callable[[Any], Iterable[Any]]:
        if kind in RENDERERS:
            raise ValueError(f"terminal renderer for {kind!r} already registered")
        RENDERERS[kind] = fn
        return fn

    return deco


def findings_table(findings: Iterable[Finding], title: str = "Findings") -> Table | Text:
    """One row per finding: severity, code, where, message and fix."""
    findings = list(findings)
    if not findings:
        return Text("No findings.", style="green")
    table = Table(title=title, show_lines=True, expand=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("where")
    table.add_column("what and why")
    table.add_column("fix")
    for f in findings:
        table.add_row(Text(f.severity.value, style=SEVERITY_STYLE[f.severity]), f.code, f.where or "", f.message, f.fix)
    return table


def to_text(renderables: Iterable[Any], *, width: int | None = None, color: bool = False) -> str:
    """Print renderables into a string console (fixed width when given)."""
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=width or 120,
        force_terminal=color,
        color_system="auto" if color else None,
        no_color=not color,
        highlight=False,
        soft_wrap=False,
    )
    for r in renderables:
        console.print(r)
    return buf.getvalue()


def render(report: ReportBase, *, width: int | None = None, color: bool = False, **options: Any) -> str:
    """Header, the kind's body (given ``options``), then the findings."""
    _load_renderers()
    body = RENDERERS.get(report.kind)
    parts: list[Any] = [Text(f"convdoctor {report.kind}: {report.model}", style="bold")]
    if body is not None:
        parts.extend(body(report, **options))
    parts.append(findings_table(report.findings))
    return to_text(parts, width=width, color=color)


def _load_renderers() -> None:
    """Import the per-kind renderer modules (they register themselves)."""
    import importlib
    import pkgutil

    from .. import report as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") and not info.name.startswith("__"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
