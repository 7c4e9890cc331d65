"""The positive surrogate of an aten graph, for the gradient method (:mod:`.gradient`).

Each rewrite keeps the op's windows and shapes and makes its Jacobian non-negative with the
same support (or blocks it, for global reductions), so back-propagation measures which input
pixels a unit depends on without any path cancelling:

* one-tensor elementwise ops (activations, scaling) -> identity; several tensors -> their sum;
* normalisation -> identity, its statistics detached;
* max pooling -> sum pooling over the same windows (same output size, ``ceil_mode`` included);
  adaptive max pooling -> adaptive average pooling;
* reductions and adaptive pooling to one unit over a spatial dim (dims ``2..``) -> detached;
  over channel dims -> a sum;
* everything else (convolutions, average pooling, views, copies, matmuls) runs as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..._compat import op_arguments, tree_flatten
from .shape_rules import POINTWISE

_POINTWISE_NAMES = frozenset(str(p) for p in POINTWISE)
_NORMS = frozenset(
    {
        "aten.native_batch_norm",
        "aten._native_batch_norm_legit",
        "aten._native_batch_norm_legit_functional",
        "aten._native_batch_norm_legit_no_training",
        "aten.native_group_norm",
        "aten.native_layer_norm",
        "aten._softmax",
        "aten._log_softmax",
        "aten.softmax",
        "aten.log_softmax",
        "aten._fused_rms_norm",
    }
)
_REDUCTIONS = frozenset(
    {
        "aten.mean",
        "aten.sum",
        "aten.amax",
        "aten.amin",
        "aten.var",
        "aten.std",
        "aten.var_mean",
        "aten.std_mean",
        "aten.logsumexp",
        "aten.linalg_vector_norm",
        "aten.norm",
        "aten.prod",
        "aten.max",
        "aten.min",
        "aten.nansum",
        "aten.nanmean",
    }
)
#: Copies that may change the memory layout a later view relies on: their Jacobian is the identity already.
_COPIES = frozenset({"aten.clone", "aten._to_copy", "aten.contiguous", "aten.lift_fresh_copy", "aten.copy"})
_MAX_POOLS = frozenset({f"aten.max_pool{n}d{s}" for n in (1, 2, 3) for s in ("", "_with_indices")})
_ADAPTIVE = frozenset(
    {
        "aten.adaptive_avg_pool1d",
        "aten._adaptive_avg_pool2d",
        "aten._adaptive_avg_pool3d",
        "aten.adaptive_max_pool1d",
        "aten.adaptive_max_pool2d",
        "aten.adaptive_max_pool3d",
    }
)


def _floats(args: Any, kwargs: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _identity(*args: Any, **kwargs: Any) -> Any:
    return _floats(args, kwargs)[0]


def _sum(*args: Any, **kwargs: Any) -> Any:
    ts = _floats(args, kwargs)
    return functools.reduce(torch.add, ts)


def _norm(op: Any) -> Callable[..., Any]:
    def f(*args: Any, **kwargs: Any) -> Any:
        out = op(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return args[0]
        return (args[0], *(o.detach() if isinstance(o, torch.Tensor) else o for o in out[1:]))

    return f


def _reduction(op: Any, name: str) -> Callable[..., Any]:
    def f(*args: Any, **kwargs: Any) -> Any:
        x = args[0]
        dims = _reduced_dims(op, args, kwargs, x.dim())
        if any(d >= 2 and x.shape[d] > 1 for d in dims):
            return op(x.detach(), *args[1:], **kwargs)  # a global reduction: blocked, as defined
        out = op(*args, **kwargs)
        summed = x.sum(dim=tuple(dims), keepdim=_keepdim(op, args, kwargs)) if dims else x.sum()
        if isinstance(out, torch.Tensor):
            return summed.to(out.dtype) if out.is_floating_point() else out
        return (summed, *out[1:]) if name in ("aten.max", "aten.min") else tuple(summed for _ in out)

    return f


def _bind(op: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for i, a in enumerate(op_arguments(op)):
        out[a.name] = (
            args[i] if i < len(args) else kwargs.get(a.name, a.default_value if a.has_default_value() else None)
        )
    return out


def _reduced_dims(op: Any, args: Sequence[Any], kwargs: dict[str, Any], rank: int) -> list[int]:
    dims = _bind(op, args, kwargs).get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):
        return list(range(rank))
    dims = [dims] if isinstance(dims, int) else dims
    return [int(d) % rank for d in dims]


def _keepdim(op: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    return bool(_bind(op, args, kwargs).get("keepdim") or False)


def _sum_pool(op: Any, n: int) -> Callable[..., Any]:
    """Max pooling -> sum pooling over the same windows (same output size, ``ceil_mode`` included)."""

    def f(*args: Any, **kwargs: Any) -> Any:
        a = _bind(op, args, kwargs)
        x = a["self"]
        out = op(x.detach(), *args[1:], **kwargs)
        shape = (out[0] if isinstance(out, tuple) else out).shape
        k = _tuple(a["kernel_size"], n)
        s = _tuple(a["stride"] or k, n)
        p, d = _tuple(a["padding"], n), _tuple(a["dilation"], n)
        pad: list[int] = []
        for j in reversed(range(n)):
            need = (shape[-n + j] - 1) * s[j] + d[j] * (k[j] - 1) + 1
            pad += [p[j], max(p[j], need - x.shape[-n + j] - p[j])]
        xp = F.pad(x, pad)
        lead = xp.shape[:-n]
        flat = xp.reshape(1, -1, *xp.shape[-n:])
        weight = x.new_ones((flat.shape[1], 1, *k))
        conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
        y = conv(flat, weight, stride=s, dilation=d, groups=flat.shape[1])
        crop: tuple[Any, ...] = (..., *(slice(0, shape[-n + j]) for j in range(n)))
        y = y[crop].reshape(*lead, *shape[-n:])
        return (y, out[1]) if isinstance(out, tuple) else y

    return f


def _adaptive(op: Any, n: int) -> Callable[..., Any]:
    def f(*args: Any, **kwargs: Any) -> Any:
        x, size = args[0], _tuple(args[1], n)
        if any(m == 1 and x.shape[-n + j] > 1 for j, m in enumerate(size)):
            out = op(x.detach(), *args[1:], **kwargs)  # global pooling: blocked
            return out
        pools: tuple[Callable[..., torch.Tensor], ...] = (
            F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d,
            F.adaptive_avg_pool3d,
        )
        avg = pools[n - 1](x, size)
        out = op(x.detach(), *args[1:], **kwargs)
        return (avg, out[1]) if isinstance(out, tuple) else avg

    return f


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


def _rank_of(name: str) -> int:
    return next((n for n in (1, 2, 3) if f"{n}d" in name), 2)


def _surrogate(op: Any, out_float: bool) -> Callable[..., Any] | None:
    name = str(op.overloadpacket)
    if name in _MAX_POOLS:
        return _sum_pool(op, _rank_of(name))
    if name in _ADAPTIVE:
        return _adaptive(op, _rank_of(name))
    if name in _NORMS:
        return _norm(op)
    if name in _REDUCTIONS and not name.startswith("aten.arg"):
        return _reduction(op, name)
    pointwise = torch.Tag.pointwise in op.tags or name in _POINTWISE_NAMES
    if pointwise and out_float and name not in _COPIES:
        return lambda *a, **k: _sum(*a, **k) if len(_floats(a, k)) > 1 else _identity(*a, **k)
    return None


def rewrite(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, bool]:
    """Replace ops by their positive surrogates; returns the module and whether a global reduction remains."""
    has_global = False
    for node in gm.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        val = node.meta.get("val")
        first = val[0] if isinstance(val, (list, tuple)) and val else val
        out_float = isinstance(first, torch.Tensor) and first.is_floating_point()
        new = _surrogate(node.target, out_float)
        if new is not None:
            has_global = has_global or _is_global(node)
            node.target = new
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm, has_global


def _is_global(node: torch.fx.Node) -> bool:
    """Whether a rewritten node blocks a path that spans a spatial dim (dims 2.. with more than one unit)."""
    name = str(getattr(node.target, "overloadpacket", node.target))
    x = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    if not isinstance(x, torch.Tensor) or (name not in _REDUCTIONS and name not in _ADAPTIVE and name not in _NORMS):
        return False
    if name in _NORMS:
        return _norm_spans_space(node.target, node.args, dict(node.kwargs), x)
    if name in _ADAPTIVE:
        n = _rank_of(name)
        size = _tuple(node.args[1], n)
        return any(m == 1 and x.shape[-n + j] > 1 for j, m in enumerate(size))
    dims = _reduced_dims(node.target, node.args, dict(node.kwargs), x.dim())
    return any(d >= 2 and x.shape[d] > 1 for d in dims)


def _norm_spans_space(op: Any, args: Sequence[Any], kwargs: dict[str, Any], x: torch.Tensor) -> bool:
    """Normalisation statistics over a spatial dim: group norm always, batch norm in training,
    layer norm when ``normalized_shape`` reaches dims 2.., softmax along dims 2..."""
    a = _bind(op, args, kwargs)
    name = str(op.overloadpacket)
    if "group_norm" in name:
        dims = list(range(2, x.dim()))
    elif "batch_norm" in name:
        dims = list(range(2, x.dim())) if a.get("training") else []
    elif "layer_norm" in name or "rms_norm" in name:
        # a norm over one trailing dim is a per-position norm (channels-last LayerNorm, as in ConvNeXt)
        k = len(a["normalized_shape"])
        dims = list(range(x.dim() - k, x.dim())) if k >= 2 else []
    else:
        dims = [int(a["dim"]) % x.dim()]
    return any(d >= 2 and x.shape[d] > 1 for d in dims)
