"""Terminal and HTML bodies of a ``check`` report: every verb's section, findings merged."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.rule import Rule
from rich.text import Text

from ..results.check import Report
from .html import HTML_SECTIONS, esc, generic_section, html_section, table
from .terminal import RENDERERS, renderer

#: order of the sections: design, hand-off, serving, training.
ORDER = ("inspect", "rf", "audit", "bench", "monitor")


def _ordered(report: Report) -> list[tuple[str, Any]]:
    names = [n for n in ORDER if n in report.parts] + [n for n in report.parts if n not in ORDER]
    return [(n, report.parts[n]) for n in names]


@renderer("check")
def body(report: Report, **options: Any) -> Iterable[Any]:
    """Each verb's body in turn (findings are shown once, merged, at the end)."""
    for name, part in _ordered(report):
        yield Rule(f"{name} ({report.seconds.get(name, 0):.1f} s)")
        sub = RENDERERS.get(part.kind)
        if sub is not None:
            yield from sub(part)
    for name, why in report.skipped.items():
        yield Text(f"{name}: skipped ({why})", style="yellow")


@html_section("check")
def html_body(report: Report) -> str:
    """A section per verb, with its own plots, then what was skipped."""
    parts = []
    for name, part in _ordered(report):
        builder = HTML_SECTIONS.get(part.kind, generic_section)
        parts.append(
            f'<section id="{esc(name)}"><h2>{esc(name)} '
            f"<small>({report.seconds.get(name, 0):.1f} s)</small></h2>{builder(part)}</section>"
        )
    if report.skipped:
        parts.append(
            '<section id="skipped"><h2>Skipped</h2>'
            + table(["verb", "why"], [[k, v] for k, v in report.skipped.items()])
            + "</section>"
        )
    return "".join(parts)
