"""The golden-file check itself: a missing golden fails unless ``--update-golden`` is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_golden_check


def test_missing_golden_fails_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="missing; create it with --update-golden"):
        make_golden_check(tmp_path, update=False)("new.txt", "text")
    assert not (tmp_path / "new.txt").exists()


def test_update_writes_then_compare_passes_and_a_change_fails(tmp_path: Path) -> None:
    make_golden_check(tmp_path, update=True)("g.txt", "one\n")
    assert (tmp_path / "g.txt").read_text(encoding="utf-8") == "one\n"
    check = make_golden_check(tmp_path, update=False)
    check("g.txt", "one\n")
    with pytest.raises(AssertionError, match="g.txt changed"):
        check("g.txt", "two\n")
