"""Property: on random conv/pool DAGs the analytic field equals the autograd-measured one, exactly."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, assume, given, settings

from convdoctor.analysis.rf._field import hull_at
from convdoctor.analysis.rf.core import analyze
from convdoctor.analysis.rf.gradient import gradient_field
from convdoctor.capture.trace import capture
from tests.rf.nets import random_net


def _central_hulls(net: torch.nn.Module, shape: tuple[int, ...]):
    graph = capture(net, (torch.empty(shape, device="meta"),))
    f = analyze(graph).fields[graph.outputs[0].producer]
    assert f.uncounted is None and f.exact
    out = []
    for a in range(2):
        c = (f.axis_size(a) - 1) // 2
        nxt = c + 1 if c + 1 < f.axis_size(a) else None
        out.append((hull_at(f.axes[a], c), hull_at(f.axes[a], nxt) if nxt is not None else None))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(random_net())
def test_analytic_field_equals_gradient_support_on_both_axes(net_shape) -> None:
    net, shape = net_shape
    hulls = _central_hulls(net, shape)
    for a, (mid, nxt) in enumerate(hulls):
        n = shape[2 + a]
        # the support is measured inside the input: only fields that fit can be compared exactly
        assume(mid is not None and 0 < mid[0] and mid[1] < n - 1)
        assume(nxt is None or (0 < nxt[0] and nxt[1] < n - 1))
    g = gradient_field(net, shape)
    for a, (mid, nxt) in enumerate(hulls):
        assert (g.lo[a], g.hi[a]) == mid, f"axis {a}: gradient {g.lo[a]}..{g.hi[a]} vs analytic {mid}"
        if nxt is not None:
            assert g.jump[a] == nxt[0] - mid[0]
