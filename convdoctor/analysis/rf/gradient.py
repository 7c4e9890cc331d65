"""Receptive field measured by autograd: the independent check of the analytic rules.

Method (after Araujo et al., Distill 2019, "gradient-based" check; Luo et al. 2016):

1. Copy the model (``copy.deepcopy``; a meta model is materialised with ``to_empty``),
   cast the copy to float64 and fill every floating parameter and buffer with a positive
   constant (``1/fan_in`` for weights with two or more dims, 1 otherwise). The user's
   model is never touched.
2. Trace the copy to an aten graph (``make_fx`` on fake tensors, functionalised) up to
   the chosen module's output, and rewrite it into a *positive surrogate*: activations and
   other one-tensor elementwise ops become the identity, elementwise ops of several tensors
   become their sum, normalisation becomes the identity (its statistics are detached), max
   pooling becomes sum pooling with the same window, and global reductions (spatial means,
   global pooling) are detached, as DESIGN.md defines the field. Every remaining Jacobian
   entry is positive, so no path cancels.
3. Back-propagate from the central unit of the layer (summed over channels) to an input of
   ones; the support of the input gradient along each axis is the field of that unit. A
   second backward from the next unit gives the jump.

The support is measured inside the input, so a field larger than the input is clipped
(``clipped`` says when the support touches a border). Float64 keeps products of many
``1/fan_in`` factors away from underflow in deep networks.

Known limit: without the analytic pass's layout tracking, this method takes dims ``2..`` of
a tensor to be its spatial axes. That decides which reductions are global (a mean over
dims >= 2), which normalisations have global statistics (GroupNorm; BatchNorm in training;
LayerNorm over two or more trailing dims; softmax along a dim >= 2) and which layer outputs
can be measured (``N, C, *spatial``). A per-position LayerNorm over one trailing dim (ConvNeXt's
channels-last blocks) is local.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from ..._compat import tree_flatten
from ..._guard import preserve_model_state
from ...capture.shadow import shadow
from ...errors import CaptureError, UsageError
from ._surrogate import rewrite


@dataclass(frozen=True)
class GradientField:
    """The measured field of one unit, per spatial axis.

    Attributes:
        layer: module path measured (``""``: the model's output).
        output_shape: shape of that module's output.
        unit: index of the measured unit along each axis (the central one).
        lo: first input pixel with a nonzero gradient, per axis (None: no local path).
        hi: last such pixel.
        jump: shift of the support from this unit to the next (None when there is no next unit
            or either support touches the border).
        clipped: the support touches the input border (the true field may reach beyond).
        global_: the graph up to the layer holds a global reduction (detached).
    """

    layer: str
    output_shape: tuple[int, ...]
    unit: tuple[int, ...]
    lo: tuple[int | None, ...]
    hi: tuple[int | None, ...]
    jump: tuple[int | None, ...]
    clipped: tuple[bool, ...]
    global_: bool

    @property
    def size(self) -> tuple[int | None, ...]:
        """Extent of the support per axis."""
        return tuple(None if lo is None or hi is None else hi - lo + 1 for lo, hi in zip(self.lo, self.hi))

    @property
    def start(self) -> tuple[int | None, ...]:
        """First pixel of unit 0's field, extrapolated with the measured jump."""
        return tuple(None if lo is None or j is None else lo - u * j for lo, u, j in zip(self.lo, self.unit, self.jump))


class _Stop(Exception):
    """Raised by the hook once the chosen module has produced its output."""


def positive_copy(model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """A float64 CPU copy of the model with every floating tensor positive and constant.

    The copy never reads the user's weights: parameters and buffers are deep-copied as
    empty meta tensors and materialised on the CPU, so a model on a GPU (or on meta) costs
    no device memory and no transfer. Lazy modules are copied whole and materialised by one
    call of the copy on zeros of ``input_shape``.
    """
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    with preserve_model_state(model):
        if any(is_lazy(t) for t in tensors):
            clone = copy.deepcopy(model)
            with torch.no_grad():
                clone.eval()(torch.zeros(tuple(input_shape), device=next(iter(tensors)).device))
        else:
            memo: dict[int, Any] = {id(t): _meta_like(t) for t in tensors}
            clone = copy.deepcopy(model, memo)
    clone = clone.to_empty(device="cpu").to(torch.float64).eval()
    with torch.no_grad():
        for t in itertools.chain(clone.parameters(), clone.buffers()):
            if t.is_floating_point():
                fan_in = max(1, int(torch.tensor(t.shape[1:]).prod().item())) if t.dim() >= 2 else 1
                t.fill_(1.0 / fan_in)
    return clone


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    empty = torch.empty_like(t, device="meta")
    return nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty


def _trace(clone: nn.Module, layer: str, x: torch.Tensor) -> torch.fx.GraphModule:
    from torch.fx.experimental.proxy_tensor import make_fx

    store: list[Any] = []
    target = clone.get_submodule(layer) if layer else None
    state = dict(itertools.chain(clone.named_parameters(), clone.named_buffers()))

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        store.append(output)
        raise _Stop

    # each attempt runs its own shadow: a failed fake trace leaves fake tensors in any cache it built
    attempt: list[nn.Module] = []

    def run(inp: torch.Tensor, params: dict[str, torch.Tensor]) -> Any:
        store.clear()
        try:
            out = torch.func.functional_call(attempt[-1], params, (inp,))
        except _Stop:
            out = store[0]
        return next(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))

    handle = target.register_forward_hook(hook) if target is not None else None
    try:
        fn = torch.func.functionalize(run, remove="mutations")
        try:
            attempt.append(shadow(clone))
            return make_fx(fn, tracing_mode="fake")(x, state)
        except Exception:  # noqa: BLE001 - data-dependent control flow: trace with real tensors instead
            attempt.append(shadow(clone))
            return make_fx(fn, tracing_mode="real")(x, state)
    finally:
        if handle is not None:
            handle.remove()


def gradient_field(model: nn.Module, input_shape: Sequence[int], layer: str = "") -> GradientField:
    """Measure the field of the central unit of ``layer``'s output by back-propagation.

    Args:
        model: the user's model (left untouched: the work happens on a float64 copy).
        input_shape: ``(N, C, *spatial)``; the measurement uses batch 1.
        layer: module path whose output is measured (``""``: the model's output).

    Returns:
        The measured support per axis.

    Raises:
        UsageError: the layer's output is not laid out ``(N, C, *spatial)`` like the input.
        CaptureError: the model cannot be traced or run in float64.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise UsageError("the gradient method needs a Python nn.Module; use method='analytic' for TorchScript")
    shape = (1, *[int(d) for d in input_shape[1:]])
    try:
        clone = positive_copy(model, shape)
        gm, has_global = rewrite(_trace(clone, layer, torch.ones(shape, dtype=torch.float64)))
        x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
        params = dict(itertools.chain(clone.named_parameters(), clone.named_buffers()))
        y = gm(x, params)
    except (UsageError, CaptureError):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CaptureError(f"gradient method failed on the float64 copy: {type(exc).__name__}: {first}") from exc
    return _measure(x, y, layer, has_global)


def _measure(x: torch.Tensor, y: torch.Tensor, layer: str, has_global: bool) -> GradientField:
    if y.dim() != x.dim():
        raise UsageError(
            f"the output of {layer or 'the model'!r} has shape {tuple(y.shape)}, not (N, C, *spatial) like the "
            "input; pick a convolutional layer with --layer"
        )
    unit = tuple((int(n) - 1) // 2 for n in y.shape[2:])
    lo, hi, clipped = _support(x, y, unit)
    nxt = tuple(u + 1 if u + 1 < n else u for u, n in zip(unit, y.shape[2:]))
    lo2, _, clipped2 = _support(x, y, nxt) if nxt != unit else (lo, hi, clipped)
    # a support cut by the border moves by less than the jump: only unclipped pairs measure it
    jump = tuple(
        None if a is None or b is None or u2 == u or c1 or c2 else b - a
        for a, b, u, u2, c1, c2 in zip(lo, lo2, unit, nxt, clipped, clipped2)
    )
    return GradientField(layer, tuple(int(d) for d in y.shape), unit, lo, hi, jump, clipped, has_global)


def _support(
    x: torch.Tensor, y: torch.Tensor, unit: Sequence[int]
) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[bool, ...]]:
    index: tuple[Any, ...] = (0, slice(None), *unit)
    (grad,) = torch.autograd.grad(y[index].sum(), x, retain_graph=True, allow_unused=True)
    n_axes = x.dim() - 2
    if grad is None:
        return (None,) * n_axes, (None,) * n_axes, (False,) * n_axes
    mask = grad[0].abs().sum(dim=0) != 0
    lo: list[int | None] = []
    hi: list[int | None] = []
    clipped: list[bool] = []
    for a in range(n_axes):
        others = tuple(d for d in range(n_axes) if d != a)
        line = mask.any(dim=others) if others else mask
        idx = torch.nonzero(line).flatten()
        if idx.numel() == 0:
            lo.append(None)
            hi.append(None)
            clipped.append(False)
            continue
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]))
        clipped.append(int(idx[0]) == 0 or int(idx[-1]) == line.numel() - 1)
    return tuple(lo), tuple(hi), tuple(clipped)
