"""Options shared by several verbs, and the common output step."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..report import Format, render
from ..results.base import ReportBase
from ._exit import FailOn, exit_code


def input_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--input NxCxHxW``."""
    return click.option("--input", "input_size", default=None, metavar="NxCxHxW",
                        help="Input size, e.g. 1x3x224x224 (CxHxW means batch 1).")(fn)


def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``, ``--html FILE``, ``--fail-on``, ``--width``."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")(fn)
    fn = click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                      help="Also write a self-contained HTML report to FILE.")(fn)
    fn = click.option("--fail-on", type=click.Choice([f.value for f in FailOn]), default="error",
                      show_default=True, help="Lowest finding severity that makes the exit code 1.")(fn)
    fn = click.option("--width", type=int, default=None, help="Terminal width for tables.")(fn)
    return fn


def emit(report: ReportBase, *, as_json: bool, html_file: Path | None, fail_on: str, width: int | None,
         **options: Any) -> None:
    """Print the report, write the HTML file if asked, and exit with the policy's code."""
    if html_file is not None:
        html_file.write_text(render(report, Format.HTML), encoding="utf-8")
    if as_json:
        click.echo(render(report, Format.JSON))
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        width = width or (None if sys.stdout.isatty() else 120)
        click.echo(render(report, Format.TERMINAL, width=width, color=color, **options), nl=False)
        if html_file is not None:
            click.echo(f"HTML report written to {html_file}")
    sys.exit(exit_code(report.findings, FailOn(fail_on)))


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str | None) -> int | None:
    """``"8GiB"``, ``"512MB"``, ``"1e9"`` -> bytes.

    Raises:
        UsageError: not a size.
    """
    import re

    from ..errors import UsageError

    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"cannot read memory size {text!r}: use e.g. 8GiB, 512MB or 1e9")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise UsageError(f"memory size {text!r} must be positive")
    return int(value)


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[Callable[[str, int, int], None] | None]:
    """A transient rich progress bar on stderr when it is a terminal; None otherwise.

    Yields ``update(description, done, total)`` for the API's ``progress=`` argument; the
    report itself goes to stdout, so a redirected run stays clean.
    """
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(description: str, done: int, total: int) -> None:
            bar.update(task, description=f"{label}: {description}" if description else label, completed=done,
                       total=total)

        yield update
