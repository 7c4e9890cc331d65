"""Trace any ``nn.Module`` into a :class:`~convdoctor.graph.Graph`.

The model runs under a ``TorchDispatchMode`` that records every aten op after autograd
and composite decomposition, with its tensor arguments (producer edges), its results,
and the innermost module that was running (forward pre/post hooks keep a stack).

By default the model runs on *meta* tensors through ``torch.func.functional_call``: the
user's parameters are swapped for empty meta copies for the duration of the call, so
nothing is computed, cost does not grow with input size, and the user's tensors are never
touched. Models that cannot run on meta tensors (data-dependent control flow, ops with no
meta kernel, TorchScript) fall back to one real CPU forward under the same recorder; the
graph says so in ``fallback_reason``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.nn.parameter import is_lazy
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

from .._guard import preserve_model_state
from ..errors import CaptureError
from ..graph import CONST, INPUT, PARAM, Graph, ModuleCall, ModuleInfo, OpNode, ParamInfo, TensorInfo
from .inputs import to_meta

#: Module attributes the lints and rules read, copied into ``ModuleInfo.attrs``.
_MODULE_ATTRS = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
    "in_features", "out_features", "num_features", "p", "inplace", "transposed",
    "track_running_stats", "momentum", "eps",
)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _Recorder(TorchDispatchMode):
    """Records each dispatched op into ``self.nodes``; module stack kept by hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.values: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
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
        return found  # type: ignore[no-any-return]

    def infos(self, obj: Any) -> tuple[TensorInfo, ...]:
        flat, _ = tree_flatten(obj)
        return tuple(self.info(t) for t in flat if isinstance(t, torch.Tensor))

    # -- dispatch -------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._record(func, args, kwargs, out)
        return out

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
                    tuple(int(d) for d in t.shape), _dtype_name(t.dtype), t.element_size(),
                    src.storage, 0, (index, i),
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
    schema = getattr(func, "_schema", None)
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


def _module_table(model: nn.Module, flags: dict[str, bool]) -> dict[str, ModuleInfo]:
    table: dict[str, ModuleInfo] = {}
    for path, m in model.named_modules():
        attrs = {a: _plain(getattr(m, a)) for a in _MODULE_ATTRS if hasattr(m, a) and not callable(getattr(m, a))}
        if hasattr(m, "bias") and isinstance(getattr(m, "bias", None), (torch.Tensor, type(None))):
            attrs["has_bias"] = getattr(m, "bias", None) is not None
        # role flags by isinstance, never by class-name substrings
        attrs["is_batchnorm"] = isinstance(m, nn.modules.batchnorm._BatchNorm)
        attrs["is_dropout"] = isinstance(m, nn.modules.dropout._DropoutNd)
        own = tuple(f"{path}.{n}" if path else n for n, _ in m.named_parameters(recurse=False))
        table[path] = ModuleInfo(path, type(m).__name__, flags.get(path, m.training), own, attrs)
    return table


def _plain(v: Any) -> Any:
    if isinstance(v, (int, float, str, bool, type(None))):
        return v
    if isinstance(v, (tuple, list)):
        return tuple(_plain(x) for x in v)
    return str(v)


def _param_table(model: nn.Module, dtype: torch.dtype | None = None) -> tuple[ParamInfo, ...]:
    """Unique parameters and buffers; floating ones as ``dtype`` when the analysis casts."""
    seen: dict[int, ParamInfo] = {}
    for is_buffer, items in ((False, model.named_parameters(remove_duplicate=False)),
                             (True, model.named_buffers(remove_duplicate=False))):
        for name, t in items:
            if t is None:
                continue
            key = id(t)
            if key in seen:
                old = seen[key]
                seen[key] = ParamInfo(old.name, old.shape, old.dtype, old.numel, old.nbytes,
                                      old.trainable, old.is_buffer, (*old.aliases, name))
                continue
            as_dtype = dtype if dtype is not None and t.is_floating_point() else t.dtype
            itemsize = torch.empty((), dtype=as_dtype).element_size()
            seen[key] = ParamInfo(
                name, tuple(t.shape), _dtype_name(as_dtype), t.numel(), t.numel() * itemsize,
                bool(t.requires_grad) and not is_buffer, is_buffer,
            )
    return tuple(seen.values())


def _meta_state(model: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Empty meta copies of every parameter and buffer; tied tensors stay tied."""
    copies: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    named = itertools.chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    for name, t in named:
        if t is None:
            continue
        if id(t) not in copies:
            meta = to_meta(t)
            if dtype is not None and meta.is_floating_point():
                meta = meta.to(dtype)
            copies[id(t)] = meta
        state[name] = copies[id(t)]
    return state


def _cast_inputs(args: tuple[Any, ...], dtype: torch.dtype | None, meta: bool) -> tuple[Any, ...]:
    def conv(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        if meta:
            v = to_meta(v)
        elif v.device.type == "meta":
            v = torch.randn(v.shape) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        return v

    return tuple(tree_map(conv, list(args)))


def _run(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], state: dict[str, torch.Tensor] | None
) -> tuple[_Recorder, Any]:
    rec = _Recorder()
    handles = []
    for path, m in model.named_modules():
        if isinstance(m, torch.jit.ScriptModule):
            continue  # no Python hooks on compiled modules: their ops belong to the nearest Python module
        handles.append(m.register_forward_pre_hook(rec.pre_hook(path, type(m).__name__)))
        handles.append(m.register_forward_hook(rec.post_hook(path), always_call=True))
    try:
        if state is not None:
            by_id = {}
            for name, t in state.items():
                if id(t) not in by_id:
                    by_id[id(t)] = name
                    rec.new_value(t, (PARAM, len(by_id)), name)
        else:
            for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
                if not is_lazy(t):  # lazy ones materialise during the call and show up as constants
                    rec.new_value(t, (PARAM, 0), name)
        for i, t in enumerate(a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)):
            rec.new_value(t, (INPUT, i), str(i))
        with torch.no_grad(), rec:
            if state is not None:
                out = torch.func.functional_call(model, state, args, kwargs, tie_weights=True, strict=False)
            else:
                out = model(*args, **kwargs)
    except Exception as exc:
        exc.convdoctor_where = _where(rec)  # type: ignore[attr-defined]
        raise
    finally:
        for h in handles:
            h.remove()
    return rec, out


def _where(rec: _Recorder) -> str:
    path, mtype, _, _ = rec.stack[-1]
    return f" at module '{path}' ({mtype})" if path else ""


def capture(
    model: nn.Module,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None = None,
    *,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    rebuild: Callable[[], nn.Module] | None = None,
    allow_fallback: bool = True,
) -> Graph:
    """Trace ``model(*args, **kwargs)`` into a graph without changing the model.

    Args:
        model: any module (parameters on CPU, CUDA or meta).
        args: example positional inputs (only their shapes and dtypes matter on the meta path).
        kwargs: example keyword inputs.
        mode: ``"eval"`` (inference, the default), ``"train"``, or ``"as-is"``.
        dtype: run floating-point parameters and inputs in this dtype.
        rebuild: makes a real-weight copy when the model lives on meta and must run for real.
        allow_fallback: run a real CPU forward when the meta run fails.

    Returns:
        The graph.

    Raises:
        CaptureError: the model cannot run on these inputs, meta or real.
    """
    kwargs = dict(kwargs or {})
    flags = {path: m.training for path, m in model.named_modules()}
    if any(is_lazy(p) for p in itertools.chain(model.parameters(), model.buffers())):
        model = _materialized_copy(model, args, kwargs)
    modules = _module_table(model, flags)
    params = _param_table(model, dtype)
    with preserve_model_state(model):
        _set_mode(model, mode)
        fallback: str | None = None
        rec: _Recorder | None = None
        if isinstance(model, torch.jit.ScriptModule):
            fallback = "TorchScript modules cannot run on meta tensors"
        else:
            try:
                margs = _cast_inputs(tuple(args), dtype, meta=True)
                mkw = dict(zip(kwargs, _cast_inputs(tuple(kwargs.values()), dtype, meta=True)))
                rec, out = _run(model, margs, mkw, _meta_state(model, dtype))
            except Exception as exc:  # any failure on meta: try for real below
                fallback = f"meta execution failed ({type(exc).__name__}: {_first_line(exc)})"
                rec = None
        if rec is None:
            if not allow_fallback:
                raise CaptureError(f"cannot trace the model on meta tensors: {fallback}")
            rec, out = _real_run(model, tuple(args), kwargs, dtype, mode, rebuild)
    return Graph(
        nodes=tuple(rec.nodes),
        inputs=tuple(v for v in _inputs_of(rec)),
        outputs=rec.infos(out),
        calls=tuple(rec.calls),
        modules=modules,
        params=params,
        fallback_reason=fallback,
    )


def _materialized_copy(model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> nn.Module:
    """Lazy modules get their shapes from a first real call: make it on a copy, never on the user's model."""
    clone = copy.deepcopy(model)
    real = _cast_inputs(tuple(args), None, meta=False)
    rkw = dict(zip(kwargs, _cast_inputs(tuple(kwargs.values()), None, meta=False)))
    try:
        with torch.no_grad():
            clone.eval()(*real, **rkw)
    except Exception as exc:
        raise CaptureError(f"the lazy model failed on its first call: {type(exc).__name__}: {_first_line(exc)}") from exc
    return clone


def _inputs_of(rec: _Recorder) -> list[TensorInfo]:
    found = {}
    for node in rec.nodes:
        for t in node.inputs:
            if t.producer[0] == INPUT:
                found[t.producer] = t
    return [found[k] for k in sorted(found)]


def _set_mode(model: nn.Module, mode: str) -> None:
    try:
        if mode == "eval":
            model.eval()
        elif mode == "train":
            model.train()
    except NotImplementedError:
        pass  # an exported program's module has its mode baked into the graph


def _real_run(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dtype: torch.dtype | None,
    mode: str, rebuild: Callable[[], nn.Module] | None,
) -> tuple[_Recorder, Any]:
    on_meta = any(t.device.type == "meta" for t in itertools.chain(model.parameters(), model.buffers()))
    target = model
    if on_meta:
        if rebuild is None:
            raise CaptureError("the model lives on the meta device and cannot run for real; pass a real model")
        target = rebuild()
        _set_mode(target, mode)
    if dtype is not None or (mode == "train" and target is model):
        # a real training-mode forward updates BatchNorm running stats: work on a copy
        target = copy.deepcopy(target)
        if dtype is not None:
            target = target.to(dtype)
    device = next(itertools.chain(target.parameters(), target.buffers()), torch.empty(0)).device
    rargs = _cast_inputs(args, dtype, meta=False)
    rargs = tuple(tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, list(rargs)))
    rkw = dict(zip(kwargs, _cast_inputs(tuple(kwargs.values()), dtype, meta=False)))
    rec = None
    try:
        rec, out = _run(target, rargs, rkw, None)
    except Exception as exc:
        shapes = ", ".join("x".join(map(str, a.shape)) for a in rargs if isinstance(a, torch.Tensor))
        where = getattr(exc, "convdoctor_where", "")
        raise CaptureError(
            f"the model failed on input {shapes}{where}: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return rec, out


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
