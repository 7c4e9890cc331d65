"""The CLI lists its verbs without importing them, and the listing says what each verb says."""

from __future__ import annotations

import importlib

import pytest
from click.testing import CliRunner

from convdoctor.cli import VERBS, main


@pytest.mark.parametrize("name", sorted(VERBS))
def test_listed_help_is_the_commands_own(name: str) -> None:
    module, listed = VERBS[name]
    command = importlib.import_module(module, "convdoctor.cli").command
    assert command.name == name
    assert listed == command.get_short_help_str(limit=1000)


def test_help_lists_every_verb_and_an_unknown_one_is_a_usage_error() -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["--help"]).output
    for name in VERBS:
        assert f"\n  {name} " in out, name
    result = runner.invoke(main, ["nosuchverb"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_a_verb_runs_through_the_lazy_group() -> None:
    result = CliRunner().invoke(main, ["layers", "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["audti"], "No such command 'audti' (did you mean 'audit'?); see 'convdoctor --help'"),
        (["inspect", "--jso"], "No such option '--jso' (did you mean '--json'?); see 'convdoctor inspect --help'"),
        (["cache", "inf"], "No such command 'inf' (did you mean 'info'?); see 'convdoctor cache --help'"),
        (["nosuchverb"], "No such command 'nosuchverb'; see 'convdoctor --help'"),
    ],
)
def test_a_near_miss_is_one_line_with_the_suggestion(args: list[str], line: str) -> None:
    # click's own wording ("... '--jso'. Did you mean '--json'?") reads as two sentences before "; see"
    result = CliRunner().invoke(main, args, prog_name="convdoctor")
    assert result.exit_code == 2 and result.output == f"convdoctor: error: {line}\n", result.output
