"""The DESIGN.md contract: public names, finding codes documented, codes raised are registered."""

from __future__ import annotations

import inspect as pyinspect
import re
from pathlib import Path

import pytest

import convdoctor
from convdoctor.findings import FINDING_CODES, Finding, Severity

ROOT = Path(__file__).resolve().parent.parent
DESIGN_CODES = {
    "BN_TRAIN_MODE",
    "DROPOUT_TRAIN_MODE",
    "BATCH_DEPENDENT_OUTPUT",
    "NONDETERMINISTIC_OUTPUT",
    "EXPORT_FAILED",
    "EXPORT_MISMATCH",
    "BN_STATS_UNINITIALIZED",
    "BN_STATS_INVALID",
    "QUANTIZATION_DROP",
    "UNCOUNTED_OPS",
    "LARGE_KERNEL",
    "REDUNDANT_BIAS",
    "RF_TOO_SMALL",
    "RF_TOO_LARGE",
    "DEAD_RELU",
    "VANISHING_GRADIENT",
    "EXPLODING_GRADIENT",
    "LOSS_AT_CHANCE",
    "LOSS_DIVERGING",
    "LOSS_OSCILLATING",
    "NAN_LOSS",
    "OVERFITTING",
    "CONSTANT_PREDICTION",
    "BN_SMALL_BATCH",
    "FROZEN_BN_UPDATING",
    "NO_GRADIENT",
    "LR_MISMATCH",
}


def test_public_names() -> None:
    expected = {
        "inspect",
        "receptive_field",
        "audit",
        "bench",
        "compare",
        "Monitor",
        "check",
        "Finding",
        "Severity",
        "__version__",
    }
    assert set(convdoctor.__all__) == expected
    for name in expected:
        assert hasattr(convdoctor, name)
    assert {s.value for s in Severity} == {"error", "warning", "info"}
    fields = [f for f in Finding.__dataclass_fields__]
    assert fields == ["code", "severity", "title", "message", "evidence", "fix", "where"]


@pytest.mark.parametrize(
    "fn, params",
    [
        (convdoctor.inspect, ["model", "input_size", "example_input", "dtype"]),
        (convdoctor.receptive_field, ["model", "input_size", "example_input", "method"]),
        (convdoctor.audit, ["model", "sample", "input_size", "targets", "batch_sizes", "checks", "device"]),
        (convdoctor.bench, ["model", "input_size", "batch_sizes", "device", "threads"]),
        (convdoctor.compare, ["models", "input_size"]),
    ],
)
def test_design_signatures(fn, params: list[str]) -> None:  # type: ignore[no-untyped-def]
    names = list(pyinspect.signature(fn).parameters)
    assert names[: len(params)] == params


def test_monitor_protocol() -> None:
    for method in ("step", "end_epoch", "report", "state_dict", "load_state_dict"):
        assert callable(getattr(convdoctor.Monitor, method))
    assert {"model", "num_classes", "every", "ddp"} <= set(pyinspect.signature(convdoctor.Monitor).parameters)


def test_fix_remedies_exist() -> None:
    import convdoctor.fix as fix

    for name in ("freeze_bn", "param_groups", "fuse_conv_bn", "quantize_int8", "warmup", "GradAccumulator"):
        assert name in fix.__all__ and hasattr(fix, name), name


def test_design_codes_registered() -> None:
    assert DESIGN_CODES <= set(FINDING_CODES)


def _documented() -> set[str]:
    text = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    return set(re.findall(r"^## ([A-Z][A-Z0-9_]+)\s*$", text, flags=re.M))


def test_every_code_documented_once_and_nothing_else() -> None:
    text = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## ([A-Z][A-Z0-9_]+)\s*$", text, flags=re.M)
    assert len(headings) == len(set(headings)), "a code is documented twice"
    assert set(headings) == set(FINDING_CODES)


def test_codes_used_in_the_package_are_registered() -> None:
    used: set[str] = set()
    pattern = re.compile(r"""(?:make_finding\(\s*|code=)["']([A-Z][A-Z0-9_]+)["']""")
    for path in (ROOT / "convdoctor").rglob("*.py"):
        used.update(pattern.findall(path.read_text(encoding="utf-8")))
    assert used, "the scan found no finding at all: the pattern is broken"
    assert used <= set(FINDING_CODES), used - set(FINDING_CODES)
