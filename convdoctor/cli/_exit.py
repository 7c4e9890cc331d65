"""One exit policy: 0 no finding at or above the threshold, 1 one is, 2 bad usage or input,
130 interrupted (Ctrl-C).

Our own exits are ``click.exceptions.Exit``; a ``SystemExit`` that reaches :func:`guarded` was
raised by the user's code (a factory or a forward calling ``sys.exit()``/``exit()``), and is an
error like any other: one line and exit 2, never the silent status it carried (``exit(0)``
would pass a CI gate on a model that never loaded).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, NoReturn

import click

from ..errors import ConvDoctorError, one_line
from ..findings import Finding, Severity

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_USAGE = 2
#: 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


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


def fatal(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """The one fatal path: a single line on stderr, exit 2 (or ``code``)."""
    click.echo(f"convdoctor: error: {message}", err=True)
    raise click.exceptions.Exit(code)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map every expected error (and any unexpected one) to one line and exit 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConvDoctorError as exc:
            fatal(one_line(exc))
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except SystemExit as exc:  # ours are click Exits: this one is the model's code
            fatal(f"the model's code called sys.exit({exc.code!r}); nothing was checked")
        except KeyboardInterrupt:
            fatal("interrupted", EXIT_INTERRUPTED)
        except Exception as exc:  # last line of defence: still one line, exit 2
            if os.environ.get("CONVDOCTOR_DEBUG"):
                raise
            fatal(f"unexpected {one_line(exc)} (run with CONVDOCTOR_DEBUG=1 for the traceback)")

    return wrapper
