"""Trace any ``nn.Module`` into a :class:`~convdoctor.graph.Graph`.

The model runs under a ``TorchDispatchMode`` that records every aten op after autograd
and composite decomposition, with its tensor arguments (producer edges), its results,
and the innermost module that was running (forward pre/post hooks keep a stack).

By default the model runs on *meta* tensors through ``torch.func.functional_call``: the
parameters are swapped for empty meta copies for the duration of the call, so nothing is
computed and cost does not grow with input size. Models that cannot run on meta tensors
(data-dependent control flow, ops with no meta kernel, TorchScript) fall back to a real
CPU forward under the same recorder; the graph says so in ``fallback_reason``.

Neither run touches the user's objects: both run a :func:`~convdoctor.capture.shadow.shadow`
of the module tree, so a head that caches anchors in ``self`` caches them in the shadow.
That also decides what is reported for such a model: when the first run wrote into the
shadow (a cache was built), the model is run a second time and that run is recorded. The
capture is the model's steady state, the one every call after the first repeats, and is
the same whether or not the model ran before (a cache the user's model already holds is
used as is; one it lacks is built by the first run).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from .._compat import BatchNormBase, DropoutBase, compiled_inner, tree_flatten, tree_map
from .._guard import AttributeSnapshot, preserve_model_state
from ..errors import CaptureError
from ..graph import INPUT, PARAM, Graph, ModuleInfo, ParamInfo, TensorInfo
from .inputs import to_meta
from .recorder import Recorder, _dtype_name
from .shadow import shadow

#: Module attributes the lints and rules read, copied into ``ModuleInfo.attrs``.
_MODULE_ATTRS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "in_features",
    "out_features",
    "num_features",
    "p",
    "inplace",
    "transposed",
    "track_running_stats",
    "momentum",
    "eps",
)


def _module_table(model: nn.Module, flags: dict[str, bool]) -> dict[str, ModuleInfo]:
    table: dict[str, ModuleInfo] = {}
    for path, m in model.named_modules():
        attrs = {a: _plain(getattr(m, a)) for a in _MODULE_ATTRS if hasattr(m, a) and not callable(getattr(m, a))}
        if hasattr(m, "bias") and isinstance(getattr(m, "bias", None), (torch.Tensor, type(None))):
            attrs["has_bias"] = getattr(m, "bias", None) is not None
        # role flags by isinstance, never by class-name substrings
        attrs["is_batchnorm"] = isinstance(m, BatchNormBase)
        attrs["is_dropout"] = isinstance(m, DropoutBase)
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
    for is_buffer, items in (
        (False, model.named_parameters(remove_duplicate=False)),
        (True, model.named_buffers(remove_duplicate=False)),
    ):
        for name, t in items:
            if t is None:
                continue
            key = id(t)
            if key in seen:
                old = seen[key]
                seen[key] = ParamInfo(
                    old.name,
                    old.shape,
                    old.dtype,
                    old.numel,
                    old.nbytes,
                    old.trainable,
                    old.is_buffer,
                    (*old.aliases, name),
                )
                continue
            as_dtype = dtype if dtype is not None and t.is_floating_point() else t.dtype
            itemsize = torch.empty((), dtype=as_dtype).element_size()
            seen[key] = ParamInfo(
                name,
                tuple(t.shape),
                _dtype_name(as_dtype),
                t.numel(),
                t.numel() * itemsize,
                bool(t.requires_grad) and not is_buffer,
                is_buffer,
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
) -> tuple[Recorder, Any]:
    """Record a shadow's steady-state call: the first call builds any cache (module docstring).

    On meta tensors the first call is recorded, and recorded again only if it wrote into
    the shadow. A real call costs about ten times more under the recorder than without
    it, so on the real path an unrecorded call always goes first.
    """
    if state is None:
        try:
            with torch.no_grad():
                model(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the recorded call below fails the same way and says where
            pass
        return _run_once(model, args, kwargs, state)
    before = AttributeSnapshot(model, values=False)
    rec, out = _run_once(model, args, kwargs, state)
    if before.changes():
        rec, out = _run_once(model, args, kwargs, state)
    return rec, out


def _run_once(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], state: dict[str, torch.Tensor] | None
) -> tuple[Recorder, Any]:
    rec = Recorder(meta=state is not None)
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


def _where(rec: Recorder) -> str:
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
        model: any module (parameters on CPU, CUDA or meta); a ``torch.compile`` wrapper is
            traced through the module it compiles, with that module's names.
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
    model = compiled_inner(model) or model
    flags = {path: m.training for path, m in model.named_modules()}
    if any(is_lazy(p) for p in itertools.chain(model.parameters(), model.buffers())):
        model = _materialized_copy(model, args, kwargs)
    modules = _module_table(model, flags)
    params = _param_table(model, dtype)
    # the runs below only touch shadows; the guard is the proof, and catches what a shadow cannot hold
    with preserve_model_state(model):
        fallback: str | None = None
        rec: Recorder | None = None
        if isinstance(model, torch.jit.ScriptModule):
            fallback = "TorchScript modules cannot run on meta tensors"
        else:
            try:
                work = shadow(model)
                _set_mode(work, mode)
                margs = _cast_inputs(tuple(args), dtype, meta=True)
                mkw = dict(zip(kwargs, _cast_inputs(tuple(kwargs.values()), dtype, meta=True)))
                rec, out = _run(work, margs, mkw, _meta_state(model, dtype))
            except Exception as exc:  # any failure on meta: try for real below
                fallback = f"meta execution failed ({type(exc).__name__}: {_first_line(exc)})"
                rec = None
        if rec is None:
            if not allow_fallback:
                raise CaptureError(f"cannot trace the model on meta tensors: {fallback}")
            rec, out = _real_run(model, tuple(args), kwargs, dtype, mode, rebuild, fallback)
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
        raise CaptureError(
            f"the lazy model failed on its first call: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return clone


def _inputs_of(rec: Recorder) -> list[TensorInfo]:
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
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    dtype: torch.dtype | None,
    mode: str,
    rebuild: Callable[[], nn.Module] | None,
    meta_failure: str | None,
) -> tuple[Recorder, Any]:
    on_meta = any(t.device.type == "meta" for t in itertools.chain(model.parameters(), model.buffers()))
    why = f" ({meta_failure})" if meta_failure else ""
    target = model
    if on_meta:
        if rebuild is None:
            where = f", where {meta_failure}" if meta_failure else ""
            raise CaptureError(
                f"the model lives on the meta device{where}; it cannot run for real: pass a model with real weights"
            )
        target = rebuild()
    if dtype is not None:
        target = copy.deepcopy(target).to(dtype)  # .to() converts parameters in place: never on the user's
    # buffers copied: a real training-mode forward updates BatchNorm running stats
    work = shadow(target, copy_buffers=True)
    _set_mode(work, mode)
    device = next(itertools.chain(work.parameters(), work.buffers()), torch.empty(0)).device
    rargs = _cast_inputs(args, dtype, meta=False)
    rargs = tuple(tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, list(rargs)))
    rkw = dict(zip(kwargs, _cast_inputs(tuple(kwargs.values()), dtype, meta=False)))
    try:
        return _run(work, rargs, rkw, None)
    except Exception as exc:
        shapes = ", ".join(
            "x".join(map(str, t.shape)) for t in tree_flatten((rargs, rkw))[0] if isinstance(t, torch.Tensor)
        )
        where = getattr(exc, "convdoctor_where", "")
        raise CaptureError(
            f"the model failed on input {shapes}{where}: {type(exc).__name__}: {_first_line(exc)}"
            + (f"; on meta tensors it had failed too{why}" if meta_failure else "")
        ) from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
