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
        "import types, convdoctor.audit.export, convdoctor.bench.timing, convdoctor.check.pipeline\n"
        "import convdoctor.inspect.pipeline, convdoctor\n"
        "for n in ('audit', 'bench', 'check', 'inspect'):\n"
        "    f = getattr(convdoctor, n)\n"
        "    assert isinstance(f, types.FunctionType) and f.__module__.startswith('convdoctor.' + n), (n, f)\n"
        "from convdoctor import audit, bench, check, inspect\nassert callable(audit) and callable(bench)\n"
        "assert callable(check) and callable(inspect)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [("api", "inspect", "inspect"), ("rf_api", "rf", "receptive_field"), ("check_api", "check", "check")],
)
def test_old_pipeline_paths_still_import_and_name_the_new_home(old: str, new: str, name: str) -> None:
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module('convdoctor.{old}')\n"
        f"assert getattr(old, {name!r}) is getattr(importlib.import_module('convdoctor.{new}'), {name!r})\n"
        f"assert any('convdoctor.{new}' in str(w.message) for w in caught), [str(w.message) for w in caught]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error() -> None:
    import convdoctor

    with pytest.raises(AttributeError, match="no_such_name"):
        convdoctor.no_such_name  # noqa: B018
    assert set(convdoctor.__all__) <= set(dir(convdoctor))
