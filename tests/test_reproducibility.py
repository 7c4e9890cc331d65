"""The suite reproduces: property tests draw fixed examples, and declared test dependencies are
imported plainly (a broken release fails the suite instead of skipping its tests)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent


def test_hypothesis_profile_is_derandomized_without_a_database() -> None:
    assert settings.default.derandomize is True
    assert settings.default.database is None


def test_the_property_test_states_its_example_count() -> None:
    from tests.rf.test_property import test_analytic_field_equals_gradient_support_on_both_axes as prop

    assert prop._hypothesis_internal_use_settings.max_examples == 60  # type: ignore[attr-defined]


def _declared_test_deps() -> set[str]:
    """Names in ``dependencies`` and the ``test`` extra of pyproject.toml (a regex: tomllib is 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    blocks = re.findall(r"^(?:dependencies|test) = \[(.*?)^\]", text, flags=re.S | re.M)
    names = re.findall(r'^\s*"([A-Za-z0-9_.-]+)', "\n".join(blocks), flags=re.M)
    return {n.lower().replace("-", "_") for n in names}


def _importorskip_targets() -> list[tuple[str, str]]:
    found = []
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "importorskip"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.append((str(path.relative_to(ROOT)), str(node.args[0].value)))
    return found


def test_declared_test_dependencies_are_not_importorskipped() -> None:
    declared = _declared_test_deps()
    assert {"lightning", "hypothesis", "onnx", "onnxruntime"} <= declared
    skipped = [(f, mod) for f, mod in _importorskip_targets() if mod.split(".")[0].lower() in declared]
    assert not skipped, f"declared test dependencies must be imported plainly: {skipped}"
