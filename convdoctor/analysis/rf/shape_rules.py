"""Receptive-field rules of ops that move or merge units: elementwise, views, slices, concatenation.

* **Elementwise** (and ops PyTorch tags ``pointwise``): output unit ``i`` reads unit
  ``i`` of each operand, so the field is the union of the operands' fields; an operand
  broadcast from a size-1 dim gives every unit the same field (jump 0).
* **Views** move axes between dims; a view that would split a spatial axis is uncounted.
* **Concatenation** along a channel dim is a union; along a spatial dim it is uncounted.
  A channel slice of a concatenation whose parts see different fields keeps the union (an
  outer bound, ``exact=False``): the channels do not say which part they came from. *Slack*:
  the widest part's field minus the narrowest part's, in pixels.

Ops that read a whole dim (reductions, normalisation statistics, softmax, matrix products)
are in :mod:`.reduction_rules`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch._ops import ops

from ...graph import OpNode, TensorInfo
from ._field import (
    Field,
    Layout,
    Piece,
    constant,
    has_axis,
    join,
    plain_dim,
    regroup,
    uncounted,
    window,
)
from ._registry import FieldOf, bound, first_field, norm_dim, rf_rule

aten = ops.aten


def _axis_pos(layout: Layout, axis: int) -> int | None:
    for d, dim in enumerate(layout):
        if any(a == axis for a, _ in dim):
            return d
    return None


def broadcast_union(items: Sequence[tuple[TensorInfo, Field]], out_shape: Sequence[int]) -> Field:
    """Union of operand fields under broadcasting (the elementwise rule)."""
    for _, f in items:
        if f.uncounted:
            return f
    rank = len(out_shape)
    layout: list[Any] = [None] * rank
    for t, f in items:
        off = rank - len(t.shape)
        if off < 0:
            return uncounted("an operand has more dims than the result", out_shape)
        for d, dim in enumerate(f.layout):
            od = d + off
            if int(t.shape[d]) != int(out_shape[od]):
                continue
            if layout[od] is None or (has_axis(dim) and not has_axis(layout[od])):
                layout[od] = dim
            elif has_axis(dim) and layout[od] != dim:
                return uncounted("operands hold different spatial axes in the same dim", out_shape)
    final: Layout = tuple(layout[d] if layout[d] is not None else plain_dim(out_shape[d]) for d in range(rank))
    n_axes = len(items[0][1].axes)
    axes: list[list[Piece]] = [[] for _ in range(n_axes)]
    for t, f in items:
        off = rank - len(t.shape)
        for a in range(n_axes):
            pieces = f.axes[a]
            d_in, d_out = _axis_pos(f.layout, a), _axis_pos(final, a)
            if d_in is not None and int(t.shape[d_in]) == int(out_shape[d_in + off]):
                if d_out != d_in + off:
                    return uncounted("operands hold a spatial axis in different dims", out_shape)
            elif d_out is not None and int(out_shape[d_out]) > 1:
                pieces = constant(pieces)
            axes[a].extend(pieces)
    return join([f for _, f in items], final, axes)


def with_fields(node: OpNode, field_of: FieldOf) -> list[tuple[TensorInfo, Field]]:
    """Each tensor operand of ``node`` with its field (operands without one left out)."""
    out = []
    for t in node.inputs:
        f = field_of(t)
        if f is not None:
            out.append((t, f))
    return out


def pointwise_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Elementwise: the union of the operands' fields, broadcasting allowed."""
    return broadcast_union(with_fields(node, field_of), node.outputs[0].shape)


#: Elementwise ops PyTorch does not tag ``pointwise`` (ops it does tag fall back to
#: :func:`pointwise_rule` automatically), plus identities and copies.
POINTWISE = (
    aten.hardswish,
    aten.hardswish_,
    aten.hardsigmoid_,
    aten.native_dropout,
    aten.clone,
    aten._to_copy,
    aten.alias,
    aten.detach,
    aten.lift_fresh,
    aten.lift_fresh_copy,
    aten.contiguous,
    aten.where,
    aten.masked_fill,
    aten.masked_fill_,
    aten.relu6,
    aten.prelu,
    aten._prelu_kernel,
    aten.dropout,
    aten.silu,
    aten.mish,
    aten.mish_,
    aten.gelu_,
    aten.elu,
    aten.elu_,
    aten.leaky_relu,
    aten.leaky_relu_,
    aten.softplus,
    aten.hardtanh,
    aten.clamp_min,
    aten.clamp_max,
    aten.clamp_,
    aten.sigmoid_,
    aten.tanh_,
    aten.relu_,
    aten.mul_,
    aten.add_,
    aten.sub_,
    aten.div_,
    aten.pow_,
    aten.log_sigmoid_forward,
)
rf_rule(*POINTWISE)(pointwise_rule)


@rf_rule(aten.copy_)
def copy_rule(node: OpNode, field_of: FieldOf) -> Field | None:
    """``dst.copy_(src)``: the result holds ``src`` (broadcast to ``dst``)."""
    src = node.args[1]
    f = field_of(src) if isinstance(src, TensorInfo) else None
    return None if f is None else broadcast_union([(src, f)], node.outputs[0].shape)


@rf_rule(
    aten.zeros_like,
    aten.ones_like,
    aten.empty_like,
    aten.full_like,
    aten.rand_like,
    aten.randn_like,
    aten.new_zeros,
    aten.new_ones,
    aten.new_empty,
    aten.new_full,
    aten.fill_,
    aten.zero_,
    aten.bernoulli,
    aten.bernoulli_,
    aten.scalar_tensor,
)
def no_dependence_rule(node: OpNode, field_of: FieldOf) -> None:
    """The result's values do not depend on the input's values (only its shape)."""
    return


def _view(f: Field, out_shape: Sequence[int], op: str) -> Field:
    if f.uncounted:
        return f
    found = regroup(f.layout, out_shape)
    if found is None:
        return uncounted(f"{op} reorders a spatial axis in a way no rule follows", out_shape)
    layout, splits = found
    if not splits:
        return f.with_(layout=layout)
    # space-to-depth: the b positions an outer unit gathers now sit in channels, so the unit
    # (all its channels) sees their hull, exactly; each channel sees only one of them (hetero)
    axes = list(f.axes)
    for a, b in splits.items():
        axes[a] = window(axes[a], 0, b - 1, b)
    return f.with_(layout=layout, axes=tuple(axes), hetero=True)


@rf_rule(
    aten.view,
    aten._unsafe_view,
    aten.reshape,
    aten._reshape_alias,
    aten.view_copy,
    aten.unsqueeze,
    aten.squeeze,
    aten.unsqueeze_,
    aten.squeeze_,
    aten.flatten,
    aten.unflatten,
)
def view_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Views and reshapes regroup the dims; the fields do not change."""
    _, f = first_field(node, field_of)
    return _view(f, node.outputs[0].shape, node.packet)


@rf_rule(aten.permute, aten.transpose, aten.t)
def permute_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Reorder the dims (and their axes)."""
    x, f = first_field(node, field_of)
    if f.uncounted:
        return f
    rank = len(x.shape)
    a = bound(node)
    if node.packet == "aten.permute":
        order = [norm_dim(int(d), rank) for d in a["dims"]]
    else:
        d0, d1 = (
            (0, 1)
            if rank == 2 and "dim0" not in a
            else (norm_dim(int(a["dim0"]), rank), norm_dim(int(a["dim1"]), rank))
        )
        order = list(range(rank))
        order[d0], order[d1] = order[d1], order[d0]
    return f.with_(layout=tuple(f.layout[d] for d in order))


@rf_rule(aten.expand, aten.expand_copy)
def expand_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Broadcast size-1 dims: every unit of an expanded dim sees the same field."""
    x, f = first_field(node, field_of)
    if f.uncounted:
        return f
    out = node.outputs[0].shape
    off = len(out) - len(x.shape)
    layout = [plain_dim(n) for n in out[:off]]
    axes = list(f.axes)
    for d, dim in enumerate(f.layout):
        if int(x.shape[d]) == int(out[d + off]):
            layout.append(dim)
        else:
            for a, _ in dim:
                if a >= 0:
                    axes[a] = constant(axes[a])
            layout.append(plain_dim(out[d + off]))
    return f.with_(layout=tuple(layout), axes=tuple(axes))


def _take(f: Field, x: TensorInfo, dim: int, offset: int, step: int, count: int, keep: bool) -> Field:
    """Units ``offset + i*step`` (``i < count``) of one dim; ``keep=False`` drops the dim."""
    if f.uncounted:
        return f
    d = norm_dim(dim, len(x.shape))
    factors = f.layout[d]
    layout = list(f.layout)
    axes = list(f.axes)
    if not has_axis(factors):
        if keep:
            layout[d] = plain_dim(count)
        else:
            del layout[d]
        partial = count != int(x.shape[d])
        return f.with_(layout=tuple(layout), exact=f.exact and not (partial and f.hetero))
    if len(factors) != 1:
        if offset == 0 and step == 1 and count == int(x.shape[d]):
            return f
        return uncounted("a slice of a dim that merges a spatial axis with others", x.shape)
    a = factors[0][0]
    axes[a] = tuple(Piece(p.jump * step, p.lo + offset * p.jump, p.hi + offset * p.jump) for p in axes[a])
    if keep:
        layout[d] = ((a, count),)
    else:
        del layout[d]
    return f.with_(layout=tuple(layout), axes=tuple(axes))


@rf_rule(aten.slice, aten.narrow, aten.slice_copy)
def slice_rule(node: OpNode, field_of: FieldOf) -> Field:
    """``x[..., start:end:step]``: along a spatial axis, unit ``i`` is unit ``start + i*step``."""
    x, f = first_field(node, field_of)
    a = bound(node)
    d = norm_dim(int(a["dim"]), len(x.shape))
    n = int(x.shape[d])
    start = int(a["start"] if a.get("start") is not None else 0)
    start = min(max(start + n if start < 0 else start, 0), n)
    step = int(a.get("step") or 1)
    return _take(f, x, d, start, step, int(node.outputs[0].shape[d]), keep=True)


@rf_rule(aten.select, aten.select_copy)
def select_rule(node: OpNode, field_of: FieldOf) -> Field:
    """``x[..., i]``: one unit of a dim; the dim disappears."""
    x, f = first_field(node, field_of)
    a = bound(node)
    d = norm_dim(int(a["dim"]), len(x.shape))
    i = int(a["index"])
    return _take(f, x, d, i + int(x.shape[d]) if i < 0 else i, 1, 1, keep=False)


@rf_rule(aten.split, aten.split_with_sizes, aten.unbind, aten.chunk, aten.tensor_split, aten.unsafe_split)
def split_rule(node: OpNode, field_of: FieldOf) -> list[Field]:
    """Consecutive slices of one dim (each output is one slice)."""
    x, f = first_field(node, field_of)
    a = bound(node)
    d = norm_dim(int(a.get("dim") or 0), len(x.shape))
    keep = node.packet != "aten.unbind"
    out, offset = [], 0
    for t in node.outputs:
        count = int(t.shape[d]) if keep else 1
        out.append(_take(f, x, d, offset, 1, count, keep=keep))
        offset += count
    return out


@rf_rule(aten.cat, aten.concat)
def cat_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Concatenation along a channel dim: the union of the parts' fields."""
    tensors = [t for t in node.args[0] if isinstance(t, TensorInfo)]
    out = node.outputs[0].shape
    d = norm_dim(int(bound(node)["dim"]), len(out))
    items = [(t, field_of(t)) for t in tensors if len(t.shape) == len(out)]
    have = [(t, f) for t, f in items if f is not None]
    for _, f in have:
        if f.uncounted:
            return f
        if has_axis(f.layout[d]):
            return uncounted("concatenation along a spatial axis", out)
    # treat the cat dim as broadcast so only the other dims must agree
    squeezed = [
        (
            TensorInfo(
                tuple(1 if i == d else n for i, n in enumerate(t.shape)), t.dtype, t.itemsize, t.storage, 0, t.producer
            ),
            f.with_(layout=unit_dim(f.layout, d)),
        )
        for t, f in have
    ]
    shape1 = tuple(1 if i == d else n for i, n in enumerate(out))
    g = broadcast_union(squeezed, shape1)
    if g.uncounted:
        return g
    hetero = len({(f.axes, f.global_) for _, f in have}) > 1 or len(have) < len(items)
    return g.with_(layout=set_dim(g.layout, d, plain_dim(out[d])), hetero=g.hetero or hetero)


def set_dim(layout: Layout, d: int, dim: Any) -> Layout:
    """``layout`` with dim ``d`` holding ``dim`` instead."""
    return tuple(dim if i == d else v for i, v in enumerate(layout))


def unit_dim(layout: Layout, d: int) -> Layout:
    """``layout`` with dim ``d`` reduced to one unit (it holds no axis any more)."""
    return set_dim(layout, d, ())
