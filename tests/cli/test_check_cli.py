"""``convdoctor check``: the CI exit codes and the combined JSON document."""

from __future__ import annotations

import json

from click.testing import CliRunner

from convdoctor.cli import main

FAST = ["--input", "1x3x16x16", "--no-bench", "--batch-sizes", "1,4"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_exit_0_without_error_findings_and_json_parts() -> None:
    code, out, _ = run("check", "tests.fixtures.user_models:tiny", *FAST, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "check"
    assert {"inspect", "rf", "audit"} <= set(doc)
    assert doc["inspect"]["totals"]["params"] == 3 * 4 * 9 + 4 + 4 + 4 * 2 + 2  # conv, BN affine, linear
    assert all(f["severity"] != "error" for f in doc["findings"])


def test_exit_1_on_an_error_finding() -> None:
    code, out, _ = run("check", "tests.fixtures.user_models:always_dropout", *FAST)
    assert code == 1
    assert "NONDETERMINISTIC_OUTPUT" in out


def test_fail_on_warning_widens_the_gate() -> None:
    code, out, _ = run("check", "tests.fixtures.user_models:biased", *FAST)
    assert code == 0 and "REDUNDANT_BIAS" in out
    code, _, _ = run("check", "tests.fixtures.user_models:biased", *FAST, "--fail-on", "warning")
    assert code == 1


def test_exit_2_on_bad_input() -> None:
    for args, needle in (
        (["check", "torchvision:nosuchnet"], "unknown torchvision model"),
        (["check", "tests.fixtures.user_models:tiny", "--batch-sizes", "1,x"], "batch-sizes"),
        (["check", "tests.fixtures.user_models:tiny", "--input", "1x3x"], "malformed input size"),
    ):
        code, out, err = run(*args)
        assert code == 2, (args, out, err)
        assert needle in err and len(err.strip().splitlines()) == 1
