"""The check registry and its contract: listed, documented, selectable, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convdoctor.audit import list_checks, registry
from convdoctor.errors import UsageError
from convdoctor.findings import FINDING_CODES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_six_checks_in_run_order() -> None:
    mine = ["modes", "batch", "determinism", "bn_stats", "export", "fusion"]
    assert [c for c in list_checks() if c in mine] == mine  # other checks (quantization) may join


@pytest.mark.parametrize("name", list_checks())
def test_every_check_declares_registered_codes_documented_in_docs(name: str) -> None:
    spec = registry.CHECKS[name]
    assert spec.codes and spec.summary
    text = (DOCS / "findings.md").read_text(encoding="utf-8")
    for code in spec.codes:
        assert code in FINDING_CODES
        assert re.search(rf"^## {code}$", text, re.MULTILINE), f"{code} has no section in docs/findings.md"
    assert f"`{name}`" in (DOCS / "audit.md").read_text(encoding="utf-8")


def test_selection_accepts_lists_and_comma_strings_in_run_order() -> None:
    assert [s.name for s in registry.select_checks("export, modes")] == ["modes", "export"]
    assert [s.name for s in registry.select_checks(["batch"])] == ["batch"]


@pytest.mark.parametrize(
    "names, match",
    [("mode", r"did you mean modes\?"), ("", "no audit check named"), (["nope"], "choose from modes, batch")],
)
def test_unknown_names_are_one_line_usage_errors(names, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        registry.select_checks(names)


def test_duplicates_and_unknown_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register_check("modes", summary="x", codes=())(lambda ctx: [])
    with pytest.raises(ValueError, match="unregistered codes"):
        registry.register_check("new", summary="x", codes=("NOT_A_CODE",))


def test_progress_is_called_before_each_check_and_at_the_end() -> None:
    from convdoctor.audit import audit
    from tests.audit import zoo

    calls: list[tuple[str, int, int]] = []
    audit(zoo.bn_net().eval(), zoo.images(4), checks="bn_stats,modes", progress=lambda *a: calls.append(a))
    assert calls == [("modes", 0, 2), ("bn_stats", 1, 2), ("", 2, 2)]
