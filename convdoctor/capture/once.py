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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._compat import tree_flatten
from ..graph import Graph
from . import trace

#: Leaf types whose ``repr`` names their value, so it can stand in a key.
_PLAIN = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device)

#: what identifies one call: per leaf of the arguments, a tensor's (shape, dtype, device) or a plain repr.
Key = tuple[Any, ...]


def call_key(args: Sequence[Any], kwargs: dict[str, Any] | None, mode: str, dtype: torch.dtype | None) -> Key | None:
    """The key of one capture, or None when the call holds a value that cannot be keyed."""
    leaves, spec = tree_flatten((tuple(args), dict(kwargs or {})))
    parts: list[Any] = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            parts.append((tuple(leaf.shape), str(leaf.dtype), leaf.device.type))
        elif isinstance(leaf, _PLAIN):
            parts.append(repr(leaf))
        else:
            return None
    return (str(spec), tuple(parts), mode, str(dtype))


class Captures:
    """The graphs captured of one model, one per distinct call (see the module docstring)."""

    def __init__(self) -> None:
        self._graphs: dict[Key, Graph] = {}

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
        return graph


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
