"""Receptive-field rules of ops that read a whole dim: reductions, normalisation, softmax, products.

* **Reductions** over a dim that holds a spatial axis of more than one unit are global
  reductions (DESIGN.md): the result depends on the input only through them.
* **Normalisation** is local (per position) plus, when its statistics span a spatial
  axis (GroupNorm, InstanceNorm, LayerNorm over H and W, BatchNorm in training), global.
* **Matrix products** contract a dim: a spatial axis in it is read whole (flatten + linear).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch._ops import ops

from ...graph import OpNode, TensorInfo
from ._field import (
    Field,
    collapse,
    make_global,
    plain_dim,
)
from ._registry import FieldOf, bound, first_field, norm_dim, rf_rule
from .shape_rules import broadcast_union, pointwise_rule, set_dim

aten = ops.aten


def reduce_dims(f: Field, x: TensorInfo, out_shape: Sequence[int], dims: Sequence[int] | None, keepdim: bool) -> Field:
    """Reduce over ``dims`` (None/empty: all): global when a reduced dim holds a spatial axis."""
    if f.uncounted:
        return f
    rank = len(x.shape)
    reduced = set(range(rank)) if not dims else {norm_dim(int(d), rank) for d in dims}
    kept = [dim if d not in reduced else () for d, dim in enumerate(f.layout) if keepdim or d not in reduced]
    if any(a >= 0 and n > 1 for d in reduced for a, n in f.layout[d]):
        return make_global(f, tuple(kept))
    return f.with_(layout=tuple(kept))


@rf_rule(
    aten.mean,
    aten.sum,
    aten.amax,
    aten.amin,
    aten.var,
    aten.std,
    aten.var_mean,
    aten.std_mean,
    aten.logsumexp,
    aten.linalg_vector_norm,
    aten.norm,
    aten.prod,
    aten.argmax,
    aten.argmin,
    aten.max,
    aten.min,
    aten.any,
    aten.all,
    aten.nansum,
    aten.nanmean,
)
def reduction_rule(node: OpNode, field_of: FieldOf) -> Any:
    """Reductions (``max``/``min`` with a Tensor ``other`` are elementwise)."""
    if len([t for t in node.args if isinstance(t, TensorInfo)]) > 1:
        return pointwise_rule(node, field_of)
    x, f = first_field(node, field_of)
    a = bound(node)
    dims = a.get("dim")
    if isinstance(dims, int):
        dims = [dims]
    return reduce_dims(f, x, node.outputs[0].shape, dims, bool(a.get("keepdim", False)))


def _stats_global(f: Field, dims: Sequence[int]) -> Field:
    """Local identity plus, when the statistics span a spatial axis, a global path."""
    if f.uncounted:
        return f
    spans = any(a >= 0 and n > 1 for d in dims for a, n in f.layout[d])
    return f.with_(global_=f.global_ or spans)


def _stats_outputs(node: OpNode, f: Field, out: Field) -> list[Field | None]:
    extra = [make_global(f, tuple(plain_dim(n) for n in t.shape)) if out.global_ else None for t in node.outputs[1:]]
    return [out, *extra]


@rf_rule(
    aten.native_batch_norm,
    aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_functional,
    aten._native_batch_norm_legit_no_training,
    aten.batch_norm,
    aten._batch_norm_impl_index,
)
def batch_norm_rule(node: OpNode, field_of: FieldOf) -> list[Field | None]:
    """Per-channel affine at inference; batch statistics over N and space in training."""
    x, f = first_field(node, field_of)
    training = bool(bound(node).get("training", False))
    dims = [d for d in range(len(x.shape)) if d != 1] if training else []
    return _stats_outputs(node, f, _stats_global(f, dims))


@rf_rule(aten.native_group_norm, aten.group_norm)
def group_norm_rule(node: OpNode, field_of: FieldOf) -> list[Field | None]:
    """Statistics over the channels of a group and every spatial position."""
    x, f = first_field(node, field_of)
    return _stats_outputs(node, f, _stats_global(f, list(range(1, len(x.shape)))))


@rf_rule(aten.native_layer_norm, aten.layer_norm, aten.rms_norm, aten._fused_rms_norm)
def layer_norm_rule(node: OpNode, field_of: FieldOf) -> list[Field | None]:
    """Statistics over the trailing ``normalized_shape`` dims."""
    x, f = first_field(node, field_of)
    k = len(bound(node)["normalized_shape"])
    return _stats_outputs(node, f, _stats_global(f, list(range(len(x.shape) - k, len(x.shape)))))


@rf_rule(aten._softmax, aten._log_softmax, aten.softmax, aten.log_softmax)
def softmax_rule(node: OpNode, field_of: FieldOf) -> Field:
    """Normalises along one dim: global when that dim holds a spatial axis."""
    x, f = first_field(node, field_of)
    return _stats_global(f, [norm_dim(int(bound(node)["dim"]), len(x.shape))])


def contract(f: Field, d: int) -> tuple[Field, bool]:
    """Read dim ``d`` whole (a matrix product sums over it); returns the field and whether it collapsed space."""
    axes = list(f.axes)
    spatial = False
    for a, n in f.layout[d]:
        if a >= 0:
            axes[a] = collapse(axes[a], n)
            spatial = spatial or n > 1
    return f.with_(axes=tuple(axes), whole=f.whole or spatial, hetero=False), spatial


@rf_rule(aten.mm, aten.addmm, aten.bmm, aten.baddbmm)
def matmul_rule(node: OpNode, field_of: FieldOf) -> Field | None:
    """``[.., n, k] @ [.., k, m]``: rows from the left, columns from the right, ``k`` read whole."""
    a = bound(node)
    if "mat1" in a:
        left, right, bias = a["mat1"], a["mat2"], a["self"]
    elif "batch1" in a:
        left, right, bias = a["batch1"], a["batch2"], a["self"]
    else:
        left, right, bias = a["self"], a["mat2"], None
    items: list[tuple[TensorInfo, Field]] = []
    for t, k in ((left, -1), (right, -2)):
        f = field_of(t)
        if f is None:
            continue
        if f.uncounted:
            return f
        d = len(t.shape) + k
        g, _ = contract(f, d)
        # seen from the output, the contracted dim is a broadcast dim of size 1
        shape = tuple(1 if i == d else int(n) for i, n in enumerate(t.shape))
        items.append(
            (
                TensorInfo(shape, t.dtype, t.itemsize, t.storage, 0, t.producer),
                g.with_(layout=set_dim(g.layout, d, ())),
            )
        )
    if isinstance(bias, TensorInfo):
        fb = field_of(bias)
        if fb is not None:
            items.append((bias, fb))
    return broadcast_union(items, node.outputs[0].shape) if items else None
