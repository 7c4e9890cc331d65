"""``check`` captures each distinct call of a model once (issue 24).

Counted at ``trace._module_table``, which :func:`convdoctor.capture.trace.capture` calls once
per capture and looks up at call time, so a capture is seen whichever module imported
``capture`` under whichever name.

Audit's checks run real forwards (eval vs train, batch consistency, determinism, export):
those are runs of the model, not captures, and are not counted. Its fusion check reads which
convolution feeds which BatchNorm from a graph: in ``check`` that is inspect's graph (the
structure of one call does not depend on its batch size or device), alone it is one capture. Bench costs each batch size
from a meta capture at that batch: the batch that matches inspect's input reuses its graph,
any other batch size is a different call and is captured once (a graph at batch 8 is not the
graph at batch 1 with numbers scaled: bytes of weights do not grow with the batch).
"""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

import convdoctor
from convdoctor.capture import trace
from convdoctor.capture.inputs import make_input
from convdoctor.capture.once import Captures, call_key


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).eval()


@pytest.fixture
def count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = trace._module_table

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(trace, "_module_table", counted)
    return calls


def test_check_without_bench_captures_once(count: list[int]) -> None:
    report = convdoctor.check(_tiny(), (1, 3, 16, 16), bench=False, audit_checks="modes")
    assert {"inspect", "rf"} <= set(report.parts)
    assert count[0] == 1  # inspect and rf share one graph (was 2)


def test_check_with_bench_captures_once_per_input_shape(count: list[int]) -> None:
    report = convdoctor.check(_tiny(), (1, 3, 16, 16), batch_sizes=(1, 2), bench=True)
    assert {"inspect", "rf", "audit", "bench"} <= set(report.parts)
    fusion = {r.name: r for r in report.parts["audit"].checks}["fusion"]  # type: ignore[attr-defined]
    assert fusion.evidence["pairs"] == 1  # it ran, on inspect's graph
    # batch 1: inspect's graph serves rf, the audit's fusion check and bench; batch 2 is a second
    # call (was 6 captures in all: inspect, rf, fusion twice, bench twice)
    assert count[0] == 2
    rows = {r.batch_size: r for r in report.parts["bench"].rows}  # type: ignore[attr-defined]
    assert rows[1].macs is not None and rows[2].macs == 2 * rows[1].macs


def test_a_shared_graph_is_the_graph_a_fresh_capture_gives() -> None:
    model, x = _tiny(), make_input((1, 3, 16, 16), device="meta")
    captures = Captures()
    first = captures.capture(model, (x,))
    assert captures.capture(model, (make_input((1, 3, 16, 16), device="meta"),)) is first
    assert captures.capture(model, (make_input((2, 3, 16, 16), device="meta"),)) is not first
    assert captures.capture(model, (x,), mode="train") is not first
    assert len(captures) == 3
    fresh = trace.capture(model, (x,))
    assert [(n.op, n.module) for n in first.nodes] == [(n.op, n.module) for n in fresh.nodes]


def test_a_call_with_an_unkeyable_value_is_never_shared() -> None:
    x = make_input((1, 3, 8, 8), device="meta")
    assert call_key((x,), {"scale": 2}, "eval", None) is not None
    assert call_key((x,), {"thing": object()}, "eval", None) is None


def test_check_finds_the_pairs_a_standalone_audit_finds(count: list[int]) -> None:
    import torchvision

    model = torchvision.models.resnet18().eval()
    alone = convdoctor.audit(model, input_size=(1, 3, 32, 32), checks="fusion", batch_sizes=(1,))
    assert count[0] == 1  # alone, the fusion check captures once (it used to capture twice)
    count[0] = 0
    report = convdoctor.check(model, (1, 3, 32, 32), audit_checks="fusion", bench=False)
    assert count[0] == 1
    shared = {r.name: r for r in report.parts["audit"].checks}["fusion"]  # type: ignore[attr-defined]
    assert shared.evidence["pairs"] == alone.checks[0].evidence["pairs"] == 20  # resnet18: 20 conv-BN pairs
    assert shared.evidence["max_abs_diff"] == alone.checks[0].evidence["max_abs_diff"]


def test_a_structure_is_shared_across_batch_and_device_only() -> None:
    model = _tiny()
    captures = Captures()
    first = captures.capture(model, (make_input((1, 3, 16, 16), device="meta"),))
    assert captures.structure(model, (make_input((4, 3, 16, 16)),)) is first  # batch 4, on the CPU
    assert len(captures) == 1
    other = captures.structure(model, (make_input((4, 3, 20, 20)),))  # another image size: captured
    assert other is not first and len(captures) == 2
    assert captures.structure(model, (make_input((4, 3, 16, 16)),), mode="train") is not first


@pytest.mark.parametrize("verb", ["audit", "bench"])
def test_a_captures_argument_of_another_type_is_refused(verb: str) -> None:
    from convdoctor.errors import UsageError

    with pytest.raises(UsageError, match="captures must be a convdoctor.capture.once.Captures"):
        if verb == "audit":
            convdoctor.audit(_tiny(), input_size=(1, 3, 8, 8), captures={"graph": None})  # type: ignore[arg-type]
        else:
            convdoctor.bench(_tiny(), (1, 3, 8, 8), captures={"graph": None})
