"""The README's commands run, and print what the README shows.

``make demo`` and ``make test`` run in CI itself (``.ci/run``); the demo's excerpt is checked in
``tests/cli/test_demo.py``. Here: every ``$ convdoctor ...`` example with its output.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from convdoctor.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
#: ``` blocks whose first line is a ``$ convdoctor`` command.
EXAMPLES = re.findall(r"```\n\$ (convdoctor [^\n]*)\n(.*?)```", README, re.S)


def test_the_readme_has_command_examples() -> None:
    assert any(cmd.startswith("convdoctor inspect") for cmd, _ in EXAMPLES)


@pytest.mark.parametrize(("command", "shown"), [e for e in EXAMPLES if e[1].strip()], ids=lambda v: v[:40])
def test_readme_command_prints_what_the_readme_shows(command: str, shown: str) -> None:
    result = CliRunner().invoke(main, shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    printed = [line.rstrip() for line in result.stdout.splitlines()]
    assert printed == shown.splitlines(), f"README output of `{command}` is stale: rerun it and paste the output"
