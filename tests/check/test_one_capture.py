"""``check`` captures each distinct call of a model once (issue 24).

Counted at ``trace._module_table``, which :func:`convdoctor.capture.trace.capture` calls once
per capture and looks up at call time, so a capture is seen whichever module imported
``capture`` under whichever name.

Audit's checks run real forwards (eval vs train, batch consistency, determinism, export):
those are runs of the model, not captures, and are not counted. Bench costs each batch size
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
    report = convdoctor.check(_tiny(), (1, 3, 16, 16), batch_sizes=(1, 2), audit_checks="modes", bench=True)
    assert {"inspect", "rf", "bench"} <= set(report.parts)
    # batch 1: inspect's graph serves rf and bench; batch 2 is a second call (was 4 captures in all)
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
