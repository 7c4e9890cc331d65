"""MACs, parameters and bytes moved, per module, from the captured graph.

MACs come from :func:`convdoctor.analysis.flops.count_flops` on a meta-tensor capture, so
they cost nothing to compute and are the same figures ``inspect`` reports.

Bytes moved (for arithmetic intensity) follow a no-reuse convention: every op reads each
tensor argument (weights included) from memory and writes each result to memory, so the
figure is an upper bound on traffic and the intensity a lower bound. Views (results that
alias an argument, from an op that is not in-place) move nothing; in-place ops read and
write their argument. Caches and fused kernels move less in practice; the convention is
the same for every layer and every model, which is what a comparison needs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..analysis.flops import OpCost, Uncounted, count_flops
from ..capture.inputs import make_input
from ..capture.once import Captures, capture_with
from ..graph import OpNode


@dataclass(frozen=True)
class ModelCosts:
    """Static cost of one forward at one input shape.

    Attributes:
        macs: multiply-accumulates of the counted ops.
        params: unique parameters (buffers excluded; tied weights once).
        total_bytes: bytes moved by every op, no-reuse convention.
        uncounted: op name -> calls whose cost is unknown (then ``macs`` is a lower bound).
        layer_macs: module path -> MACs of the ops that ran directly in it; None when an
            uncounted op ran there.
        layer_bytes: module path -> bytes moved by the ops that ran directly in it.
        layer_type: module path -> class name.
    """

    macs: int
    params: int
    total_bytes: int
    uncounted: dict[str, int] = field(default_factory=dict)
    layer_macs: dict[str, int | None] = field(default_factory=dict)
    layer_bytes: dict[str, int] = field(default_factory=dict)
    layer_type: dict[str, str] = field(default_factory=dict)

    @property
    def intensity(self) -> float | None:
        """Model MACs per byte moved (None when nothing moves)."""
        return self.macs / self.total_bytes if self.total_bytes else None


def op_bytes(node: OpNode) -> int:
    """Bytes one op moves: its tensor arguments read plus its results written (0 for a view)."""
    is_view = not any(node.allocates) and not node.packet.endswith("_")
    if is_view:
        return 0
    return sum(t.nbytes for t in node.inputs) + sum(t.nbytes for t in node.outputs)


def model_costs(
    model: nn.Module,
    shape: Sequence[int] | None,
    dtype: torch.dtype | None = None,
    rebuild: Any = None,
    *,
    args: tuple[Any, ...] | None = None,
    kwargs: dict[str, Any] | None = None,
    captures: Captures | None = None,
) -> ModelCosts:
    """Capture ``model`` on a meta input of ``shape`` (or on ``args``/``kwargs``) and cost it.

    Args:
        model: the module (left untouched: capture swaps in meta parameters).
        shape: input shape, batch included; ignored when ``args`` is given.
        dtype: run in this dtype (affects bytes, not MACs).
        rebuild: real-weight factory for models that cannot run on meta tensors.
        args: the call's positional arguments (keyword inputs, image lists), instead of ``shape``.
        kwargs: the call's keyword arguments.
        captures: graphs already captured of this model; a call among them is not captured again.

    Returns:
        The costs.
    """
    if args is None:
        if shape is None:
            raise ValueError("model_costs needs a shape or args")
        args = (make_input(shape, device="meta", dtype=torch.float32),)
    floats = [t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()]
    if dtype is not None and all(t.dtype == dtype for t in floats):
        dtype = None  # already in that dtype: no cast, so a real-tensor fallback needs no copy
    graph = capture_with(captures, model, args, kwargs, mode="eval", dtype=dtype, rebuild=rebuild)
    flops = count_flops(graph)
    layer_macs: dict[str, int | None] = {}
    layer_bytes: dict[str, int] = {}
    layer_type: dict[str, str] = {}
    for node, cost in zip(graph.nodes, flops.costs, strict=True):
        path = node.module
        layer_type.setdefault(path, node.module_type)
        layer_bytes[path] = layer_bytes.get(path, 0) + op_bytes(node)
        prev = layer_macs.get(path, 0)
        if isinstance(cost, Uncounted) or prev is None:
            layer_macs[path] = None
        else:
            layer_macs[path] = prev + (cost.macs if isinstance(cost, OpCost) else 0)
    params = sum(p.numel for p in graph.params if not p.is_buffer)
    return ModelCosts(
        macs=flops.macs,
        params=params,
        total_bytes=sum(layer_bytes.values()),
        uncounted=dict(flops.uncounted),
        layer_macs=layer_macs,
        layer_bytes=layer_bytes,
        layer_type=layer_type,
    )
