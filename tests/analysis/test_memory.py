"""Peak live activation memory against the CPU allocator, measured by torch.profiler.

The independent measurement: the profiler's allocation events of one real no-grad
forward. Kernel workspaces (oneDNN weight reorders, temporary outputs) are allocated and
freed inside one op; they are not activations, so each top-level op contributes only
its net allocation. Frees outside any op (Python dropping a reference) count as they come.
"""

from __future__ import annotations

import bisect

import pytest
import torch
import torchvision.models as tvm
from torch.profiler import ProfilerActivity, profile

from convdoctor.api import inspect
from convdoctor.analysis.memory import activation_memory
from convdoctor.capture.trace import capture


def measured_peak_activation_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        model(x)  # warm-up: one-time allocations stay out of the measurement
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(x)
    events = prof.profiler.kineto_results.events()
    spans = sorted(((e.start_ns(), e.end_ns()) for e in events if e.name().startswith("aten::")),
                   key=lambda r: (r[0], -r[1]))
    top: list[tuple[int, int]] = []
    for start, end in spans:
        if top and start >= top[-1][0] and end <= top[-1][1]:
            continue  # nested inside the previous top-level op
        top.append((start, end))
    starts = [s for s, _ in top]
    net: dict[int, int] = {}
    changes: list[tuple[int, int]] = []
    for e in events:
        if e.name() != "[memory]":
            continue
        t, nbytes = e.start_ns(), e.nbytes()
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and top[i][0] <= t <= top[i][1]:
            net[i] = net.get(i, 0) + nbytes
        else:
            changes.append((t, nbytes))
    changes += [(top[i][1], n) for i, n in net.items()]
    current = peak = 0
    for _, nbytes in sorted(changes):
        current += nbytes
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_peak_matches_profiler_within_10_percent(name: str) -> None:
    torch.manual_seed(0)
    model = tvm.get_model(name).eval()
    x = torch.randn(1, 3, 224, 224)
    predicted = inspect(model, example_input=x).totals["peak_activation_bytes"]
    measured = measured_peak_activation_bytes(model, x)
    assert measured > 0
    assert abs(predicted - measured) / measured <= 0.10, (predicted, measured)


def test_peak_of_a_chain_is_two_adjacent_tensors() -> None:
    # conv -> relu (out of place) -> conv: at the second conv, its input (8x8x8) and
    # output (8x8x8) are live, the first conv's output was freed after relu read it.
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1))
    r = inspect(model, (1, 3, 8, 8))
    act = 8 * 8 * 8 * 4  # one 1x8x8x8 fp32 tensor
    assert r.totals["activation_bytes"] == 3 * act
    assert r.totals["peak_activation_bytes"] == 2 * act


def test_inplace_relu_allocates_nothing() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True))
    g = capture(model, (torch.empty(1, 3, 8, 8, device="meta"),))
    mem = activation_memory(g)
    assert mem.per_node_bytes[-1] == 0
    assert mem.activation_bytes == 8 * 8 * 8 * 4
