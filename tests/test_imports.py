"""Light import: the package and the CLI's help load no heavy stack (each case in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Stacks a verb imports when it needs them, never at package import (issue 15, section 2).
HEAVY = ("torch.utils.benchmark", "onnx", "onnxruntime", "torchao", "matplotlib", "sklearn", "lightning")


def _loaded(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter and return which of torch and HEAVY it left imported."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in ('torch', *{HEAVY!r}) if m in sys.modules]))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return list(json.loads(run.stdout.strip().splitlines()[-1]))


def test_import_convdoctor_loads_neither_torch_nor_a_heavy_stack() -> None:
    assert _loaded("import convdoctor") == []


def test_every_public_name_resolves_without_the_optional_stacks() -> None:
    # bench() needs torch.utils.benchmark; the optional stacks wait for the verb that uses them
    loaded = _loaded("import convdoctor\nfor n in convdoctor.__all__: getattr(convdoctor, n)")
    assert "torch" in loaded
    assert not set(loaded) - {"torch", "torch.utils.benchmark"}, loaded


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_cli_help_and_version_import_no_torch(flag: str) -> None:
    code = (
        "from click.testing import CliRunner\nfrom convdoctor.cli import main\n"
        f"result = CliRunner().invoke(main, [{flag!r}])\nassert result.exit_code == 0, result.output"
    )
    assert _loaded(code) == []


def test_public_names_are_the_functions_even_after_a_subpackage_import() -> None:
    # importing convdoctor.audit.export sets the subpackage on the parent; the function must win
    code = (
        "import convdoctor.audit.export, convdoctor.bench.timing, convdoctor\n"
        "assert callable(convdoctor.audit) and convdoctor.audit.__module__ == 'convdoctor.audit'\n"
        "assert callable(convdoctor.bench) and convdoctor.bench.__module__ == 'convdoctor.bench'\n"
        "from convdoctor import audit, bench, inspect\nassert callable(audit) and callable(bench)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error() -> None:
    import convdoctor

    with pytest.raises(AttributeError, match="no_such_name"):
        convdoctor.no_such_name  # noqa: B018
    assert set(convdoctor.__all__) <= set(dir(convdoctor))
