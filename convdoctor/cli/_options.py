"""Options shared by several verbs, and the common output step."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..capture.choices import Choice, Device, Dtype, ModelMode, either
from ..errors import UsageError
from ..report import Format, render
from ..report.files import check_target, write_report
from ..results.base import ReportBase
from ._exit import EXIT_USAGE, FailOn, exit_code


def _inputs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> str | tuple[str, ...] | None:
    """One ``--input`` is the size string; several are keyword sizes, passed on as given."""
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def input_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--input NxCxHxW`` or ``--input NAME=NxCxHxW`` (repeatable): the API's ``input_size``."""
    return click.option(
        "--input",
        "input_size",
        multiple=True,
        callback=_inputs,
        metavar="[NAME=]NxCxHxW",
        help="Input size, e.g. 1x3x224x224 (CxHxW: batch 1; one image for a detector); "
        "NAME=1x3x224x224 passes it as keyword argument NAME (repeat for several).",
    )(fn)


class OneLineUsage(click.ClickException):
    """A bad option value: one line on stderr and exit 2, like every other usage error (see ``_exit``)."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        """Print ``convdoctor: error: MESSAGE`` only (click would add the usage block)."""
        click.echo(f"convdoctor: error: {self.format_message()}", err=True)


class EnumChoice(click.Choice):  # type: ignore[type-arg]
    """A ``click.Choice`` built from one of the shared string enums, so the CLI and the API cannot drift.

    ``device_suffix`` also accepts ``cuda:N`` (the API checks that the device exists). A bad
    value is one line and exit 2, with the valid choices.
    """

    def __init__(
        self, enum_type: type[Choice], what: str, *, device_suffix: bool = False, adjective: str = "unknown"
    ) -> None:
        super().__init__([m.value for m in enum_type], case_sensitive=False)
        self.enum_type = enum_type
        self.what = what
        self.device_suffix = device_suffix
        self.adjective = adjective

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The member's value (``cuda:N`` kept whole), or a one-line usage error."""
        text = str(value).strip().lower()
        head = text.split(":", 1)[0] if self.device_suffix else text
        try:
            self.enum_type(head)
        except ValueError:
            raise OneLineUsage(
                f"{self.adjective} {self.what} {str(value)!r}: choose {either(self.enum_type)}"
            ) from None
        return text


def device_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--device cpu|cuda[:N]`` from :class:`Device`."""
    return click.option(
        "--device",
        type=EnumChoice(Device, "device", device_suffix=True),
        default=Device.CPU.value,
        show_default=True,
        help="Where the model runs (cuda:N picks a GPU).",
    )(fn)


def dtype_option(default: Dtype | None, help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--dtype`` from :class:`Dtype`."""
    return click.option(
        "--dtype",
        type=EnumChoice(Dtype, "dtype", adjective="unsupported"),
        default=None if default is None else default.value,
        show_default=default is not None,
        help=help_text,
    )


def mode_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--mode auto|as-is|eval`` from :class:`ModelMode` (the rule itself lives in the API)."""
    return click.option(
        "--mode",
        type=EnumChoice(ModelMode, "mode"),
        default=ModelMode.AUTO.value,
        show_default=True,
        help="as-is: the flags the model loads with; eval: after model.eval(); auto: eval for a "
        "model a factory just built (training mode by construction), as-is for .pt/.pt2 "
        "files.",
    )(fn)


def weights_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--weights CKPT``."""
    return click.option(
        "--weights",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="state_dict checkpoint for MODEL (loaded with weights_only=True).",
    )(fn)


def batch_sizes_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--batch-sizes 1,8,32``: passed to the API, which has the one parser."""
    return click.option(
        "--batch-sizes", default=default, show_default=True, help="Batch sizes, comma-separated, e.g. 1,8,32."
    )


def trust_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--trust-file``: the API's ``trusted=True`` (see ``convdoctor.capture.archive``)."""
    return click.option(
        "--trust-file",
        "trusted",
        is_flag=True,
        help="MODEL is a .pt/.pt2 file you trust: load it without vetting (it may run code in it).",
    )(fn)


def _report_target(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Refuse a report path that writing would clobber before any work runs (``--force`` is eager)."""
    if value is not None:
        try:
            check_target(value, force=bool(ctx.params.get("force")))
        except UsageError as exc:
            raise OneLineUsage(str(exc)) from None
    return value


def report_file_option(*names: str, help_text: str, default: Path | None = None) -> Callable[..., Any]:
    """A FILE a report is written to (``--html``, ``--plot``): checked at parse time, see ``report.files``."""
    return click.option(
        *names,
        type=click.Path(dir_okay=False, path_type=Path),
        default=default,
        show_default=default is not None,
        callback=_report_target,
        help=help_text,
    )


def force_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--force``: overwrite a report FILE that is not a previous report of ours."""
    return click.option(
        "--force",
        is_flag=True,
        is_eager=True,  # read by the report-file callbacks, whatever the order on the command line
        help="Overwrite the report FILE even when it is not a previous convdoctor report (a link is replaced).",
    )(fn)


def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``, ``--html FILE``, ``--force``, ``--fail-on``, ``--width``."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")(fn)
    fn = report_file_option("--html", "html_file", help_text="Also write a self-contained HTML report to FILE.")(fn)
    fn = force_option(fn)
    fn = click.option(
        "--fail-on",
        type=click.Choice([f.value for f in FailOn]),
        default="error",
        show_default=True,
        help="Lowest finding severity that makes the exit code 1.",
    )(fn)
    fn = click.option("--width", type=int, default=None, help="Terminal width for tables.")(fn)
    return fn


def emit(
    report: ReportBase,
    *,
    as_json: bool,
    html_file: Path | None,
    fail_on: str,
    width: int | None,
    force: bool = False,
    **options: Any,
) -> None:
    """Print the report, write the HTML file if asked, and exit with the policy's code."""
    if html_file is not None:
        write_report(html_file, render(report, Format.HTML), force=force)
    if as_json:
        click.echo(render(report, Format.JSON))
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        width = width or (None if sys.stdout.isatty() else 120)
        click.echo(render(report, Format.TERMINAL, width=width, color=color, **options), nl=False)
        if html_file is not None:
            click.echo(f"HTML report written to {html_file}")
    raise click.exceptions.Exit(exit_code(report.findings, FailOn(fail_on)))


_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


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
            bar.update(
                task, description=f"{label}: {description}" if description else label, completed=done, total=total
            )

        yield update
