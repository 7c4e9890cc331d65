"""Roll per-op costs up the module hierarchy into one row per module."""

from __future__ import annotations

from ..graph import Graph
from ..results.inspect import LayerRow
from .flops import FlopResult, OpCost, Uncounted
from .memory import MemoryResult
from .params import ParamResult


def _ancestors(path: str) -> list[str]:
    """``"a.b.c"`` -> ``["a.b.c", "a.b", "a", ""]``."""
    if not path:
        return [""]
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)] + [""]


def layer_rows(graph: Graph, flops: FlopResult, memory: MemoryResult, params: ParamResult) -> tuple[LayerRow, ...]:
    """One row per module: its ops' costs summed over it and every sub-module."""
    macs: dict[str, int] = {}
    other: dict[str, int] = {}
    act: dict[str, int] = {}
    unc: dict[str, int] = {}
    for node, cost, nbytes in zip(graph.nodes, flops.costs, memory.per_node_bytes):
        for path in _ancestors(node.module):
            if isinstance(cost, OpCost):
                macs[path] = macs.get(path, 0) + cost.macs
                other[path] = other.get(path, 0) + cost.other_flops
            elif isinstance(cost, Uncounted):
                unc[path] = unc.get(path, 0) + 1
            act[path] = act.get(path, 0) + nbytes
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    for call in graph.calls:
        calls[call.path] = calls.get(call.path, 0) + 1
        shapes[call.path] = call.outputs[0].shape if call.outputs else None
    if graph.outputs and "" not in shapes:
        shapes[""] = graph.outputs[0].shape
        calls[""] = max(calls.get("", 0), 1)
    rows = []
    for path, info in graph.modules.items():
        rows.append(
            LayerRow(
                name=path,
                type=info.type,
                depth=0 if not path else path.count(".") + 1,
                output_shape=shapes.get(path),
                calls=calls.get(path, 0),
                params=params.per_module.get(path, 0),
                macs=macs.get(path, 0),
                other_flops=other.get(path, 0),
                activation_bytes=act.get(path, 0),
                uncounted=unc.get(path, 0),
                training=info.training,
            )
        )
    return tuple(rows)
