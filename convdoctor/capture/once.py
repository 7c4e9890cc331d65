"""One capture per call: the graphs of one model, shared by every analysis that needs them.

``check`` runs inspect, rf and bench on one model. Each used to trace the model itself, so
one ``check`` captured the same call up to four times. A :class:`Captures` holds the graph
of each distinct call instead: the first analysis that asks captures, the later ones get the
same graph.

The key is what decides the graph: the tensors of the call (their place in the arguments,
shape, dtype and device), its other arguments (by ``repr``), the mode and the dtype the
capture runs in. The model is not part of the key, so one ``Captures`` serves one model (or
copies of it, such as bench's own load of the same spec): the graph's ops, shapes and
parameters are a function of the architecture and the call, which is what the analyses
read. A call holding an object whose ``repr`` is not a plain value (an arbitrary user object)
has no key and is captured every time: a miss costs time, a wrong hit would cost truth.

Some analyses read only the graph's structure: which module's output feeds which (audit's
Conv-BatchNorm folding). They ask :meth:`Captures.structure`, whose key leaves out the batch
size and the device: the per-sample shapes, dtypes and other arguments still decide. So
``check``'s audit, which runs a real batch of four on the CPU, finds its pairs in the graph
inspect captured on the meta device at batch 1. What a check then computes from the real
model (the folded copy's outputs against the original's) is run on real tensors, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._compat import tree_flatten
from ..errors import UsageError
from ..graph import Graph
from . import trace

#: Leaf types whose ``repr`` names their value, so it can stand in a key.
_PLAIN = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device)

#: what identifies one call: per leaf of the arguments, a tensor's (shape, dtype, device) or a plain repr.
Key = tuple[Any, ...]


def _key(
    args: Sequence[Any], kwargs: dict[str, Any] | None, mode: str, dtype: torch.dtype | None, *, per_sample: bool
) -> Key | None:
    """What identifies a call: per leaf, a tensor's shape, dtype and device, or a plain value's repr.

    ``per_sample`` leaves out what a graph's data flow does not depend on: each tensor's first
    (batch) dimension and every device.
    """
    leaves, spec = tree_flatten((tuple(args), dict(kwargs or {})))
    parts: list[Any] = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            shape = tuple(leaf.shape)
            parts.append(
                (leaf.dim(), shape[1:], str(leaf.dtype)) if per_sample else (shape, str(leaf.dtype), leaf.device.type)
            )
        elif per_sample and isinstance(leaf, torch.device):
            continue
        elif isinstance(leaf, _PLAIN):
            parts.append(repr(leaf))
        else:
            return None
    return (str(spec), tuple(parts), mode, str(dtype))


def call_key(args: Sequence[Any], kwargs: dict[str, Any] | None, mode: str, dtype: torch.dtype | None) -> Key | None:
    """The key of one capture, or None when the call holds a value that cannot be keyed."""
    return _key(args, kwargs, mode, dtype, per_sample=False)


def structure_key(
    args: Sequence[Any], kwargs: dict[str, Any] | None, mode: str, dtype: torch.dtype | None
) -> Key | None:
    """:func:`call_key` without the batch size (each tensor's first dimension) and the device."""
    return _key(args, kwargs, mode, dtype, per_sample=True)


def shared_captures(value: object) -> Captures | None:
    """``value`` checked as the ``captures`` argument of a verb: a :class:`Captures` or None.

    Raises:
        UsageError: anything else.
    """
    if value is not None and not isinstance(value, Captures):
        raise UsageError("captures must be a convdoctor.capture.once.Captures of this model")
    return value


class Captures:
    """The graphs captured of one model, one per distinct call (see the module docstring)."""

    def __init__(self) -> None:
        self._graphs: dict[Key, Graph] = {}
        self._structures: dict[Key, Graph] = {}

    def __len__(self) -> int:
        return len(self._graphs)

    def capture(
        self,
        model: nn.Module,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None = None,
        *,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
        rebuild: Callable[[], nn.Module] | None = None,
    ) -> Graph:
        """:func:`~convdoctor.capture.trace.capture`, once per distinct call.

        Raises:
            CaptureError: as ``capture``; a failed capture is not remembered.
        """
        key = call_key(args, kwargs, mode, dtype)
        graph = None if key is None else self._graphs.get(key)
        if graph is None:
            graph = trace.capture(model, args, kwargs, mode=mode, dtype=dtype, rebuild=rebuild)
            if key is not None:
                self._graphs[key] = graph
            shape_key = structure_key(args, kwargs, mode, dtype)
            if shape_key is not None:
                self._structures.setdefault(shape_key, graph)
        return graph

    def structure(
        self,
        model: nn.Module,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None = None,
        *,
        mode: str = "eval",
        dtype: torch.dtype | None = None,
    ) -> Graph:
        """A graph of this call at any batch size on any device, for analyses of its data flow only.

        The ops, shapes and values of the graph returned may be another batch's; the modules
        it runs and which output feeds which input are the call's. Captures the call when no
        graph of the same per-sample shapes is held.
        """
        key = structure_key(args, kwargs, mode, dtype)
        graph = None if key is None else self._structures.get(key)
        return graph if graph is not None else self.capture(model, args, kwargs, mode=mode, dtype=dtype)


def capture_with(
    captures: Captures | None,
    model: nn.Module,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None = None,
    *,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    rebuild: Callable[[], nn.Module] | None = None,
) -> Graph:
    """Capture through ``captures`` when a caller shares one, else capture afresh."""
    if captures is None:
        return trace.capture(model, args, kwargs, mode=mode, dtype=dtype, rebuild=rebuild)
    return captures.capture(model, args, kwargs, mode=mode, dtype=dtype, rebuild=rebuild)
