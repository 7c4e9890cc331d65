"""The dispatch-level recorder behind :func:`~convdoctor.capture.trace.capture`.

Every aten op (after autograd and composite decomposition) becomes an ``OpNode`` with its
tensor arguments (producer edges), its results and the innermost module that was running
(forward pre/post hooks keep a stack).

On a meta run, a model may hold real tensors of its own in plain attributes (YOLO's
``Detect.stride``, an anchor grid cached by an earlier real call). An op that mixes such a
tensor with meta ones would fail ("Tensor on device cpu is not on the expected device
meta"), so the recorder hands the op a meta copy of the real tensor instead (one copy per
tensor: a constant used twice stays one value). Only shapes flow on a meta run, so the
copy changes nothing the analyses see; 0-dim CPU tensors mix with meta ones natively and
stay real, so ``.item()`` on them still works.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, MutableMapping
from typing import Any

import torch
from torch import nn
from torch.utils.weak import WeakTensorKeyDictionary

from .._compat import TorchDispatchMode, op_schema, tree_flatten, tree_map
from ..graph import CONST, ModuleCall, OpNode, TensorInfo
from .inputs import to_meta


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class Recorder(TorchDispatchMode):
    """Records each dispatched op into ``self.nodes``; module stack kept by hooks.

    Args:
        meta: the run is on meta tensors (real non-scalar tensors mixed into an op become
            meta copies, see the module docstring).
    """

    def __init__(self, *, meta: bool = False) -> None:
        super().__init__()
        self.meta = meta
        self._meta_copies: MutableMapping[torch.Tensor, torch.Tensor] = WeakTensorKeyDictionary()
        self.values: MutableMapping[torch.Tensor, TensorInfo] = WeakTensorKeyDictionary()
        self.nodes: list[OpNode] = []
        self.calls: list[ModuleCall] = []
        self.stack: list[tuple[str, str, int, tuple[TensorInfo, ...]]] = [("", "", 0, ())]
        self._storage_ids = itertools.count()
        self._consts = itertools.count()

    # -- values ---------------------------------------------------------------
    def new_value(self, t: torch.Tensor, producer: tuple[int, int], name: str = "") -> TensorInfo:
        """Register a tensor with fresh storage."""
        info = TensorInfo(
            shape=tuple(int(d) for d in t.shape),
            dtype=_dtype_name(t.dtype),
            itemsize=t.element_size(),
            storage=next(self._storage_ids),
            storage_bytes=_storage_nbytes(t),
            producer=producer,
            name=name,
        )
        self.values[t] = info
        return info

    def info(self, t: torch.Tensor) -> TensorInfo:
        """The value a tensor holds; tensors never seen are graph constants."""
        found = self.values.get(t)
        if found is None:
            found = self.new_value(t, (CONST, next(self._consts)))
        return found

    def infos(self, obj: Any) -> tuple[TensorInfo, ...]:
        flat, _ = tree_flatten(obj)
        return tuple(self.info(t) for t in flat if isinstance(t, torch.Tensor))

    # -- dispatch -------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.meta:
            args, kwargs = self._meta_only(args, kwargs)
        out = func(*args, **kwargs)
        self._record(func, args, kwargs, out)
        return out

    def _meta_only(self, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        flat = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if not any(a.device.type == "meta" for a in flat) or all(a.device.type == "meta" or a.dim() == 0 for a in flat):
            return args, kwargs

        def conv(v: Any) -> Any:
            if not isinstance(v, torch.Tensor) or v.device.type == "meta" or v.dim() == 0:
                return v
            copy = self._meta_copies.get(v)
            if copy is None:
                copy = self._meta_copies[v] = to_meta(v)
                if v in self.values:
                    self.values[copy] = self.values[v]
            return copy

        return tree_map(conv, args), tree_map(conv, kwargs)

    def _record(self, func: Any, args: Any, kwargs: dict[str, Any], out: Any) -> None:
        index = len(self.nodes)
        inputs = self.infos((args, kwargs))
        to_info = lambda v: self.info(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
        rec_args = tree_map(to_info, tuple(args))
        rec_kwargs = tree_map(to_info, dict(kwargs))
        flat_out, _ = tree_flatten(out)
        outputs: list[TensorInfo] = []
        allocates: list[bool] = []
        tensor_outs = [t for t in flat_out if isinstance(t, torch.Tensor)]
        for i, t in enumerate(tensor_outs):
            base = _aliased_argument(func, i, len(tensor_outs), args, kwargs)
            if base is not None:
                src = self.info(base)
                info = TensorInfo(
                    tuple(int(d) for d in t.shape),
                    _dtype_name(t.dtype),
                    t.element_size(),
                    src.storage,
                    0,
                    (index, i),
                )
                self.values[t] = info
                allocates.append(False)
            else:
                info = self.new_value(t, (index, i))
                allocates.append(True)
            outputs.append(info)
        path, mtype, _, _ = self.stack[-1]
        self.nodes.append(
            OpNode(
                index=index,
                op=str(func),
                packet=str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func),
                module=path,
                module_type=mtype,
                args=rec_args,
                kwargs=rec_kwargs,
                inputs=inputs,
                outputs=tuple(outputs),
                allocates=tuple(allocates),
            )
        )

    # -- module hooks ---------------------------------------------------------
    def pre_hook(self, path: str, mtype: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self.stack.append((path, mtype, len(self.nodes), self.infos(args)))

        return hook

    def post_hook(self, path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if len(self.stack) <= 1 or self.stack[-1][0] != path:
                return  # an exception unwound past us; the stack is abandoned
            p, mtype, first, ins = self.stack.pop()
            self.calls.append(ModuleCall(p, mtype, first, len(self.nodes) - 1, ins, self.infos(output)))

        return hook


def _storage_nbytes(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):
        return t.numel() * t.element_size()


def _aliased_argument(func: Any, out_pos: int, n_out: int, args: Any, kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The input tensor whose storage result ``out_pos`` shares, from the op schema's alias sets."""
    schema = op_schema(func)
    if schema is None:
        return None
    returns = schema.returns
    if not returns:
        return None
    ret = returns[0] if len(returns) == 1 else (returns[out_pos] if out_pos < len(returns) else None)
    if ret is None or ret.alias_info is None:
        return None
    wanted = set(ret.alias_info.before_set)
    for j, arg in enumerate(schema.arguments):
        if arg.alias_info is None or not wanted & set(arg.alias_info.before_set):
            continue
        value = args[j] if j < len(args) else kwargs.get(arg.name)
        if isinstance(value, (list, tuple)):
            value = next((v for v in value if isinstance(v, torch.Tensor)), None)
        if isinstance(value, torch.Tensor):
            return value
    return None
