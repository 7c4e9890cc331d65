"""Renderers: a report in, a string out. The library never prints.

``render(report, fmt)`` dispatches to ``report/{terminal,json,html}.py``.
"""

from __future__ import annotations

import enum
from typing import Any

from ..results.base import ReportBase


class Format(str, enum.Enum):
    """Output formats shared by the API and the CLI."""

    TERMINAL = "terminal"
    JSON = "json"
    HTML = "html"


def render(
    report: ReportBase,
    fmt: Format | str = Format.TERMINAL,
    *,
    width: int | None = None,
    color: bool = False,
    **options: Any,
) -> str:
    """Render a report as text.

    Args:
        report: any report object.
        fmt: terminal, json or html.
        width: terminal width (terminal format only).
        color: emit ANSI colour codes (terminal format only).
        **options: passed to the kind's terminal renderer (e.g. ``depth`` for inspect).

    Returns:
        The rendered document.
    """
    fmt = Format(fmt)
    if fmt is Format.JSON:
        from . import json as _json

        return _json.render(report)
    if fmt is Format.HTML:
        from . import html as _html

        return _html.render(report)
    from . import terminal

    return terminal.render(report, width=width, color=color, **options)
