"""Receptive-field rules of the ops that slide a window over spatial dims.

Every rule reduces to :func:`~._field.window`: output unit ``o`` reads input units
``o*step + first + [0, span]`` along a dim. The derivation sits on each rule:

* convolution / pooling (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``):
  ``first = -p``, ``span = (k-1)*d``, ``step = s``. ``ceil_mode`` only adds units at the
  end, so it changes no unit's field.
* transposed convolution: ``out[i*s + t*d - p] += in[i]``, so ``o`` reads
  ``i = (o + p - t*d) / s``. Exact for ``s == 1``; for ``s > 1`` the divisibility
  condition picks a subset, and we give the continuous hull (an outer bound, ``exact=False``).
  *Slack* (how far the bound may exceed the real field, in the op's input units; times the
  input jump in pixels): ``2 (s - 1) d / s``, since the extreme taps a unit really reads lie
  within ``s - 1`` taps of each kernel end.
* adaptive pooling: window ``i`` is ``[floor(i*n/m), ceil((i+1)*n/m))``; a fixed window when
  ``m`` divides ``n``, an outer bound otherwise; ``m == 1 < n`` is a global reduction.
  *Slack* when uneven, with ``n/m = p/q`` in lowest terms: ``2 (q - 1) / q`` input units
  (the bound rounds each window end outwards by at most ``(q - 1)/q``).
* interpolation: source position ``x(o) = o*r + c`` with ``r`` the input/output scale;
  nearest reads ``floor(x)``, linear ``floor(x) + {0, 1}``, cubic ``floor(x) + {-1..2}``.
  Exact for nearest with an integer ``r`` (a subsampling); otherwise an outer bound.
  *Slack*: 1 input unit (the bound is the continuous tap interval, the field the integer
  units inside it) wherever ``x(o)`` is not an integer; at an integer ``x(o)`` linear and
  cubic give the taps beside it zero weight, so the slack there is the whole tap width
  (linear 2, cubic 4).
* padding: unit ``o`` is input unit ``o - left`` (negative padding crops).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from torch._ops import ops

from ...graph import OpNode
from ._field import (
    Field,
    Num,
    Pieces,
    collapse,
    has_axis,
    make_global,
    plain_dim,
    uncounted,
    window,
)
from ._registry import FieldOf, bound, first_field, ntuple, rf_rule

aten = ops.aten

Window = tuple[Num, Num, Num]  #: ``(first, span, step)``


def slide(
    f: Field,
    out_shape: Sequence[int],
    windows: Sequence[Window | None],
    *,
    mixes_channels: bool = False,
    groups: int = 1,
    exact: bool = True,
) -> Field:
    """Apply one window per trailing spatial dim (``None``: that dim becomes global).

    Args:
        f: the input's field.
        out_shape: the op's output shape.
        windows: ``(first, span, step)`` for each of the last ``len(windows)`` dims.
        mixes_channels: the op sums over the dim before the windowed ones (convolution).
        groups: convolution groups (a grouped conv cannot contract a spatial channel dim).
        exact: False when the windows are outer bounds.
    """
    if f.uncounted:
        return f
    rank, k = len(out_shape), len(windows)
    layout = list(f.layout)
    axes = list(f.axes)
    whole = f.whole
    if any(w is None for w in windows):
        return _global_window(f, out_shape, windows)
    for j, w in enumerate(windows):
        d = rank - k + j
        dim = f.layout[d]
        if not has_axis(dim):
            layout[d] = plain_dim(out_shape[d])
        elif len(dim) == 1:
            a = dim[0][0]
            axes[a] = window(axes[a], *w)  # type: ignore[misc]
            layout[d] = ((a, int(out_shape[d])),)
        else:
            return uncounted("a window slides over a dim that merges a spatial axis with others", out_shape)
    cd = rank - k - 1
    if mixes_channels and cd >= 0:
        if has_axis(f.layout[cd]):
            if groups != 1:
                return uncounted("a grouped convolution over a dim that holds a spatial axis", out_shape)
            for a, n in f.layout[cd]:
                if a >= 0:
                    axes[a] = collapse(axes[a], n)
                    whole = whole or n > 1
        layout[cd] = plain_dim(out_shape[cd])
    return f.with_(
        layout=tuple(layout),
        axes=tuple(axes),
        exact=f.exact and exact,
        whole=whole,
        hetero=f.hetero and not (mixes_channels and groups == 1),
    )


def _global_window(f: Field, out_shape: Sequence[int], windows: Sequence[Window | None]) -> Field:
    rank, k = len(out_shape), len(windows)
    layout = list(f.layout)
    for j in range(k):
        layout[rank - k + j] = plain_dim(out_shape[rank - k + j])
    return make_global(f, tuple(layout))


def _spatial_rank(node: OpNode, fallback: int) -> int:
    for n in (1, 2, 3):
        if f"{n}d" in node.packet:
            return n
    return fallback


@rf_rule(aten.convolution)
def conv_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Convolution and transposed convolution, any rank, groups, dilation, non-square."""
    _, f = first_field(node, field_of)
    a = bound(node)
    kernel = tuple(int(k) for k in a["weight"].shape[2:])
    n = len(kernel)
    stride, padding, dilation = ntuple(a["stride"], n), ntuple(a["padding"], n), ntuple(a["dilation"], n)
    out = node.outputs[0].shape
    wins: list[Window | None]
    if not a["transposed"]:
        wins = [(-p, (k - 1) * d, s) for k, s, p, d in zip(kernel, stride, padding, dilation)]
        return slide(f, out, wins, mixes_channels=True, groups=int(a["groups"]))
    wins = [
        (Fraction(p - (k - 1) * d, s), Fraction((k - 1) * d, s), Fraction(1, s))
        for k, s, p, d in zip(kernel, stride, padding, dilation)
    ]
    return slide(f, out, wins, mixes_channels=True, groups=int(a["groups"]), exact=all(s == 1 for s in stride))


@rf_rule(
    aten.max_pool1d,
    aten.max_pool2d,
    aten.max_pool3d,
    aten.max_pool1d_with_indices,
    aten.max_pool2d_with_indices,
    aten.max_pool3d_with_indices,
)
def max_pool_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Max pooling (with or without indices); ``ceil_mode`` changes no unit's field."""
    _, f = first_field(node, field_of)
    a = bound(node)
    n = _spatial_rank(node, 2)
    k = ntuple(a["kernel_size"], n)
    s, p, d = ntuple(a["stride"], n, k), ntuple(a["padding"], n), ntuple(a["dilation"], n)
    return slide(f, node.outputs[0].shape, [(-pi, (ki - 1) * di, si) for ki, si, pi, di in zip(k, s, p, d)])


@rf_rule(aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d)
def avg_pool_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Average pooling (``count_include_pad`` and ``divisor_override`` only rescale)."""
    _, f = first_field(node, field_of)
    a = bound(node)
    n = _spatial_rank(node, 2)
    k = ntuple(a["kernel_size"], n)
    s, p = ntuple(a["stride"], n, k), ntuple(a["padding"], n)
    return slide(f, node.outputs[0].shape, [(-pi, ki - 1, si) for ki, si, pi in zip(k, s, p)])


def adaptive_window(n_in: int, n_out: int) -> tuple[Window | None, bool]:
    """Window of adaptive pooling from ``n_in`` to ``n_out`` units, and whether it is exact.

    ``None`` means a global reduction (one output unit reading several input units).
    """
    if n_out == 1 and n_in > 1:
        return None, True
    if n_in % n_out == 0:
        k = n_in // n_out
        return (0, k - 1, k), True
    r = Fraction(n_in, n_out)
    q = r.denominator
    # floor(i*r) >= i*r - (q-1)/q and ceil((i+1)*r) - 1 <= i*r + r - 1/q
    lo, hi = -Fraction(q - 1, q), r - Fraction(1, q)
    return (lo, hi - lo, r), False


@rf_rule(
    aten.adaptive_avg_pool1d,
    aten._adaptive_avg_pool2d,
    aten._adaptive_avg_pool3d,
    aten.adaptive_max_pool1d,
    aten.adaptive_max_pool2d,
    aten.adaptive_max_pool3d,
)
def adaptive_pool_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Adaptive pooling: a fixed window when it divides evenly, global when the output is 1."""
    x, f = first_field(node, field_of)
    out = node.outputs[0].shape
    n = _spatial_rank(node, 2)
    wins, exact = [], True
    for j in range(n):
        w, ok = adaptive_window(int(x.shape[len(x.shape) - n + j]), int(out[len(out) - n + j]))
        wins.append(w)
        exact = exact and ok
    return slide(f, out, wins, exact=exact)


_INTERP_TAPS = {"nearest": (-1, 0), "nearest_exact": (-1, 0), "linear": (-1, 1), "cubic": (-2, 2)}


def interp_window(n_in: int, n_out: int, scale: float | None, mode: str, align_corners: bool) -> tuple[Window, bool]:
    """Window of an interpolation along one dim, and whether it is exact.

    PyTorch's source index is ``x(o) = o*r`` (nearest, ``align_corners=True``) or
    ``(o + 0.5)*r - 0.5`` (linear/cubic half-pixel; nearest-exact uses ``(o + 0.5)*r``),
    with ``r = 1/scale`` when a scale is given, ``(n-1)/(m-1)`` with aligned corners, else
    ``n/m``. The taps around ``floor(x)`` give the bound ``[x + lo, x + hi]``.
    """
    if align_corners and mode in ("linear", "cubic"):
        r = Fraction(n_in - 1, n_out - 1) if n_out > 1 else Fraction(0)
        c = Fraction(0)
    else:
        r = 1 / Fraction(scale) if scale else Fraction(n_in, n_out)
        c = {"nearest": Fraction(0), "nearest_exact": r / 2}.get(mode, r / 2 - Fraction(1, 2))
    if mode == "nearest" and r.denominator == 1:
        return (0, 0, r), True
    lo, hi = _INTERP_TAPS[mode]
    return (c + lo, hi - lo, r), False


def _interp_rule(mode: str) -> Any:
    def rule(node: OpNode, field_of: FieldOf) -> Field:
        x, f = first_field(node, field_of)
        a = bound(node)
        out = node.outputs[0].shape
        n = _spatial_rank(node, 1)
        if node.op.endswith(".vec"):
            scales = list(a.get("scale_factors") or [None] * n)
        else:
            scales = [v for k, v in a.items() if k.startswith("scales")] or [None] * n
        wins, exact = [], True
        for j in range(n):
            d_in, d_out = int(x.shape[len(x.shape) - n + j]), int(out[len(out) - n + j])
            w, ok = interp_window(d_in, d_out, scales[j], mode, bool(a.get("align_corners", False)))
            wins.append(w)
            exact = exact and ok
        return slide(f, out, wins, exact=exact)

    rule.__doc__ = f"Interpolation ({mode}): see :func:`interp_window`."
    return rule


for _packets, _mode in (
    ((aten.upsample_nearest1d, aten.upsample_nearest2d, aten.upsample_nearest3d), "nearest"),
    ((aten._upsample_nearest_exact1d, aten._upsample_nearest_exact2d, aten._upsample_nearest_exact3d), "nearest_exact"),
    ((aten.upsample_linear1d, aten.upsample_bilinear2d, aten.upsample_trilinear3d), "linear"),
    ((aten.upsample_bicubic2d,), "cubic"),
):
    rf_rule(*_packets)(_interp_rule(_mode))


def _pad_windows(pad: Sequence[int], rank: int) -> list[Window]:
    """``pad`` lists (left, right) from the last dim backwards; unit ``o`` is input ``o - left``."""
    n = len(pad) // 2
    return [(-int(pad[2 * (n - 1 - j)]), 0, 1) for j in range(n)]


@rf_rule(
    aten.constant_pad_nd,
    aten.reflection_pad1d,
    aten.reflection_pad2d,
    aten.reflection_pad3d,
    aten.replication_pad1d,
    aten.replication_pad2d,
    aten.replication_pad3d,
)
def pad_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Padding shifts the units; reflect/replicate borders fold back inside the input."""
    x, f = first_field(node, field_of)
    a = bound(node)
    pad = a["pad"] if "pad" in a else a["padding"]
    return slide(f, node.outputs[0].shape, _pad_windows(pad, len(x.shape)))


@rf_rule(aten.pixel_shuffle)
def pixel_shuffle_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Output unit ``h`` is input unit ``floor(h/r)``: an outer bound like nearest upsampling.

    Slack: ``(r - 1)/r`` input units (the bound spans ``[h/r - (r-1)/r, h/r]``, the field one unit).
    """
    _, f = first_field(node, field_of)
    r = int(bound(node)["upscale_factor"])
    w: Window = (-Fraction(r - 1, r), Fraction(r - 1, r), Fraction(1, r))
    return _channel_space(f, node.outputs[0].shape, [w, w], exact=r == 1, hetero=False)


@rf_rule(aten.pixel_unshuffle)
def pixel_unshuffle_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Output unit ``h`` gathers input units ``h*r .. h*r + r-1`` into channels."""
    _, f = first_field(node, field_of)
    r = int(bound(node)["downscale_factor"])
    return _channel_space(f, node.outputs[0].shape, [(0, r - 1, r)] * 2, exact=True, hetero=r > 1)


def _channel_space(f: Field, out: Sequence[int], wins: list[Window], *, exact: bool, hetero: bool) -> Field:
    if f.uncounted:
        return f
    if has_axis(f.layout[len(out) - 3]):
        return uncounted("pixel (un)shuffle of a channel dim that holds a spatial axis", out)
    g = slide(f, out, wins, exact=exact)
    return g.with_(layout=(*g.layout[:-3], plain_dim(out[-3]), *g.layout[-2:]), hetero=g.hetero or hetero)


@rf_rule(aten.flip)
def flip_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Unit ``o`` is unit ``n-1-o``: the jump changes sign."""
    x, f = first_field(node, field_of)
    if f.uncounted:
        return f
    axes: list[Pieces] = list(f.axes)
    for d in bound(node)["dims"]:
        d = int(d) % len(x.shape)
        dim = f.layout[d]
        if not has_axis(dim):
            continue
        if len(dim) != 1:
            return uncounted("flip of a dim that merges a spatial axis with others", x.shape)
        a, n = dim[0]
        axes[a] = window(axes[a], n - 1, 0, -1)
    return f.with_(axes=tuple(axes))
