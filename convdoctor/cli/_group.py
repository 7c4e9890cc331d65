"""The ``convdoctor`` click group: its verbs, imported when called, and one-line parse errors."""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator
from typing import Any

import click

#: verb -> (module that defines its ``command``, the one-line help ``convdoctor --help`` lists).
#: The line is the command's own short help (``tests/cli/test_lazy_cli.py`` keeps them equal):
#: written here so that listing the verbs imports none of them.
VERBS: dict[str, tuple[str, str]] = {
    "cache": ("._cache", "Show (info) or empty (clear) the folder of compiled int8 packages and measurements."),
    "audit": ("._audit", "Will this checkpoint behave the same in production? Modes, batch dependence, export parity."),
    "bench": (
        "._bench",
        "Latency the way production sees it: warm p50/p90/p99, cold start, throughput, where the time goes.",
    ),
    "check": (
        "._check",
        "inspect + rf + audit (+ bench): exit 1 on an error finding (--fail-on widens it), 2 on bad input.",
    ),
    "demo": ("._demo", "Train, monitor, audit, quantize and bench a small CNN on scikit-learn's digits."),
    "inspect": ("._inspect", "Shapes, parameters, MACs, memory and lints, without running the model."),
    "layers": (
        "._layers",
        "Compare standard, depthwise-separable, strided and pooled layers (and 3x3 stacks for k>=5).",
    ),
    "rf": ("._rf", "Receptive field (size, jump, start) of every layer, in input pixels."),
}


class OneLineError(click.ClickException):
    """click's own parse error (a bad option value, a missing argument) as one line and exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        """``convdoctor: error: MESSAGE; see 'CMD --help'`` (click would print its usage block)."""
        click.echo(f"convdoctor: error: {self.format_message()}", err=True)


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # `convdoctor` alone prints the help, as asked
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "convdoctor"
        raise OneLineError(f"{_one_sentence(exc.format_message())}; see '{where} --help'") from None


#: click's suggestion after its message: ``. Did you mean '--json'?`` or ``. (Did you mean one of: ...?)``
_SUGGESTION = re.compile(r"^(?P<what>.*?)\.\s+\(?Did you mean (?P<which>.*?\?)\)?$", re.DOTALL)


def _one_sentence(message: str) -> str:
    """click's message as one clause: ``No such option '--jso' (did you mean '--json'?)``."""
    found = _SUGGESTION.match(message.strip())
    if found:
        return f"{found['what']} (did you mean {found['which']})"
    return message.strip().rstrip(".")


class LazyGroup(click.Group):
    """A group whose commands are imported when they are called, not when they are listed.

    Parse errors, its own and its verbs', are one line (see :class:`OneLineError`).
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        with _one_line_usage():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.NoSuchCommand:  # click suggests from the commands it holds: none are loaded yet
            raise click.NoSuchCommand(click.utils.make_str(args[0]), possibilities=sorted(VERBS), ctx=ctx) from None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in VERBS:
            return None
        command: click.Command = importlib.import_module(VERBS[cmd_name][0], __package__).command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        width = max(formatter.width - 6 - max(len(name) for name in VERBS), 20)
        rows = [(name, _fit(VERBS[name][1], width)) for name in sorted(VERBS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _fit(text: str, limit: int) -> str:
    """``text`` cut at a word to at most ``limit`` characters, ``...`` marking the cut."""
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."
