"""Random conv/pool networks with residual adds and channel concatenation, for property tests.

A net is a list of steps over a growing list of tensors; every step reads earlier tensors
by index, so branches, residual adds and concatenations form a DAG. Shapes are tracked
while drawing so that merged branches always agree (branch 2 is drawn among the
convolutions that give branch 1's output size), and a running bound on the field keeps
the inputs small enough to run the gradient method quickly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import nn

#: stop adding layers once a field could outgrow this fraction of the input
FIELD_BUDGET = 0.8


@dataclass(frozen=True)
class Conv:
    """One convolution (per-axis kernel, stride, padding, dilation)."""

    src: int
    out_ch: int
    k: tuple[int, int]
    s: tuple[int, int]
    p: tuple[int, int]
    d: tuple[int, int]
    relu: bool = False


@dataclass(frozen=True)
class Pool:
    """One max or average pooling."""

    src: int
    kind: str
    k: tuple[int, int]
    s: tuple[int, int]
    p: tuple[int, int]
    d: tuple[int, int]
    ceil: bool


@dataclass(frozen=True)
class Merge:
    """``a + b`` or ``cat([a, b], 1)``."""

    a: int
    b: int
    kind: str


def out_size(n: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    """PyTorch's output length of a conv/pool along one axis (0 when it would be empty)."""
    eff = d * (k - 1) + 1
    span = n + 2 * p - eff
    if span < 0:
        return 0
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= n + p:
        out -= 1
    return out


class RandomNet(nn.Module):
    """Executes a list of steps; the last tensor is the output."""

    def __init__(self, in_ch: int, steps: list[Conv | Pool | Merge], channels: list[int]) -> None:
        super().__init__()
        self.steps = steps
        layers: list[nn.Module] = []
        for step in steps:
            if isinstance(step, Conv):
                conv = nn.Conv2d(channels[step.src], step.out_ch, step.k, step.s, step.p, step.d)
                layers.append(nn.Sequential(conv, nn.ReLU()) if step.relu else conv)
            elif isinstance(step, Pool):
                if step.kind == "max":
                    layers.append(nn.MaxPool2d(step.k, step.s, step.p, step.d, ceil_mode=step.ceil))
                else:
                    layers.append(nn.AvgPool2d(step.k, step.s, step.p, ceil_mode=step.ceil))
            else:
                layers.append(nn.Identity())
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ts = [x]
        for step, layer in zip(self.steps, self.layers):
            if isinstance(step, Merge):
                a, b = ts[step.a], ts[step.b]
                ts.append(a + b if step.kind == "add" else torch.cat([a, b], 1))
            else:
                ts.append(layer(ts[step.src]))
        return ts[-1]


def _axis_params(draw: st.DrawFn, n: int, pool: str | None, ceil: bool) -> tuple[int, int, int, int, bool]:
    k = draw(st.integers(1, 7))
    s = draw(st.integers(1, 3))
    d = 1 if pool == "avg" else draw(st.integers(1, 3))
    max_p = k if pool is None else k // 2  # PyTorch: pooling padding <= kernel // 2
    p = draw(st.integers(0, max_p))
    return k, s, p, d, ceil


Drawn = list[tuple["Conv | Pool | Merge", tuple[int, int, int], tuple[int, int]]]


@st.composite
def random_net(draw: st.DrawFn) -> tuple[RandomNet, tuple[int, int, int, int]]:
    """A random net and its input shape ``(1, C, H, W)``."""
    h, w = draw(st.integers(24, 112)), draw(st.integers(24, 112))
    in_ch = draw(st.integers(1, 3))
    shapes = [(in_ch, h, w)]
    field = [(1, 1)]  # running (size, jump) upper bound per tensor, max over the two axes
    steps: list[Conv | Pool | Merge] = []
    n_layers = draw(st.integers(2, 12))
    for _ in range(3 * n_layers):  # a draw that does not fit is skipped, not fatal
        if len(steps) >= n_layers:
            break
        src = draw(st.integers(max(0, len(shapes) - 3), len(shapes) - 1))
        kind = draw(st.sampled_from(["conv", "conv", "max", "avg", "add", "cat"]))
        drawn = (
            _draw_step(draw, kind, src, shapes, field)
            if kind in ("conv", "max", "avg")
            else _draw_merge(draw, kind, src, shapes, field)
        )
        if not drawn or any(b[0] > FIELD_BUDGET * min(h, w) for _, _, b in drawn):
            continue
        for step, shape, bound in drawn:
            steps.append(step)
            shapes.append(shape)
            field.append(bound)
    if not steps:
        steps.append(Conv(0, 2, (3, 3), (1, 1), (1, 1), (1, 1)))
        shapes.append((2, h, w))
    return RandomNet(in_ch, steps, [c for c, _, _ in shapes]), (1, in_ch, h, w)


def _draw_step(
    draw: st.DrawFn, kind: str, src: int, shapes: list[tuple[int, int, int]], field: list[tuple[int, int]]
) -> Drawn:
    c, h, w = shapes[src]
    size, jump = field[src]
    pool = None if kind == "conv" else kind
    ceil = draw(st.booleans()) if pool else False
    ph, pw = _axis_params(draw, h, pool, ceil), _axis_params(draw, w, pool, ceil)
    oh, ow = out_size(h, *ph[:4], ph[4]), out_size(w, *pw[:4], pw[4])
    if oh < 1 or ow < 1:
        return []
    bound = (size + max((ph[0] - 1) * ph[3], (pw[0] - 1) * pw[3]) * jump, jump * max(ph[1], pw[1]))
    k, s, p, d = (ph[0], pw[0]), (ph[1], pw[1]), (ph[2], pw[2]), (ph[3], pw[3])
    if pool is None:
        out_ch = draw(st.integers(1, 3))
        return [(Conv(src, out_ch, k, s, p, d, draw(st.booleans())), (out_ch, oh, ow), bound)]
    return [(Pool(src, kind, k, s, p, d, ceil), (c, oh, ow), bound)]


def _options(n_in: int, n_out: int) -> list[tuple[int, int, int, int]]:
    return [
        (k, s, p, d)
        for k in range(1, 8)
        for s in (1, 2, 3)
        for d in (1, 2, 3)
        for p in range(k + 1)
        if out_size(n_in, k, s, p, d) == n_out
    ]


def _pick(draw: st.DrawFn, options: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Stride first (so branches with a different stride than the main path come up often), then the rest."""
    stride = draw(st.sampled_from(sorted({o[1] for o in options})))
    return draw(st.sampled_from([o for o in options if o[1] == stride]))


def _draw_merge(
    draw: st.DrawFn, kind: str, src: int, shapes: list[tuple[int, int, int]], field: list[tuple[int, int]]
) -> Drawn:
    """A conv branch from an earlier tensor, drawn among those that give ``src``'s size, then the merge."""
    base = draw(st.integers(max(0, src - 3), src - 1)) if src > 0 else 0
    _, h0, w0 = shapes[base]
    c, h, w = shapes[src]
    options_h, options_w = _options(h0, h), _options(w0, w)
    if not options_h or not options_w:
        return []
    kh, sh, ph, dh = _pick(draw, options_h)
    kw, sw, pw, dw = _pick(draw, options_w)
    out_ch = c if kind == "add" else draw(st.integers(1, 3))
    branch = Conv(base, out_ch, (kh, kw), (sh, sw), (ph, pw), (dh, dw), draw(st.booleans()))
    size0, jump0 = field[base]
    bound_b = (size0 + max((kh - 1) * dh, (kw - 1) * dw) * jump0, jump0 * max(sh, sw))
    jump = max(field[src][1], bound_b[1])
    # paths with different jumps: the central unit's hull spreads by the jump difference per unit
    spread = abs(field[src][1] - bound_b[1]) * max(h, w) // 2
    bound = (max(field[src][0], bound_b[0]) + spread, jump)
    merged = (c if kind == "add" else c + out_ch, h, w)
    return [(branch, (out_ch, h, w), bound_b), (Merge(src, len(shapes), kind), merged, bound)]
