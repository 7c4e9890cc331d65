"""One exit policy: 0 no finding at or above the threshold, 1 one is, 2 bad usage or input."""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, NoReturn

import click

from ..errors import ConvDoctorError, one_line
from ..findings import Finding, Severity

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2


class FailOn(str, enum.Enum):
    """The lowest severity that makes the command exit 1."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    NEVER = "never"


def exit_code(findings: Iterable[Finding], fail_on: FailOn | str = FailOn.ERROR) -> int:
    """0 when no finding reaches ``fail_on``, else 1. Pure."""
    fail_on = FailOn(fail_on)
    if fail_on is FailOn.NEVER:
        return EXIT_OK
    threshold = Severity(fail_on.value).rank
    return EXIT_FINDING if any(f.severity.rank >= threshold for f in findings) else EXIT_OK


def fatal(message: str) -> NoReturn:
    """The one fatal path: a single line on stderr, exit 2."""
    click.echo(f"convdoctor: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map every expected error (and any unexpected one) to one line and exit 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConvDoctorError as exc:
            fatal(one_line(exc))
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            fatal("interrupted")
        except Exception as exc:  # last line of defence: still one line, exit 2
            if os.environ.get("CONVDOCTOR_DEBUG"):
                raise
            fatal(f"unexpected {one_line(exc)} (run with CONVDOCTOR_DEBUG=1 for the traceback)")

    return wrapper
