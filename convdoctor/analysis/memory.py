"""Activation memory: total bytes written by ops, and the peak live bytes of one forward.

Liveness works on *storages*, not tensors: a view or an in-place result shares its
base's storage (from the op schema's alias sets, recorded at capture), and a storage is
freed after the last op that reads any tensor living in it. The model's outputs stay
alive to the end; its inputs, parameters and buffers are not activations and are not
counted. This is what the CPU caching-free allocator sees in one ``no_grad`` forward,
minus kernel workspaces (which no graph shows). A module's arguments live until its
forward returns (Python holds them), even after their last reader.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..graph import Graph, OpNode

@dataclass(frozen=True)
class MemoryResult:
    """Activation memory of one forward.

    Attributes:
        activation_bytes: bytes of every storage an op allocated (views excluded).
        peak_activation_bytes: the largest sum of live storages at any op.
        peak_at: index of the op at which the peak occurs (-1 when the graph is empty).
        per_node_bytes: bytes each op allocated.
    """

    activation_bytes: int
    peak_activation_bytes: int
    peak_at: int
    per_node_bytes: tuple[int, ...]


def _allocated(node: OpNode) -> list[tuple[int, int]]:
    """``(storage, bytes)`` of the outputs this op allocates."""
    return [(t.storage, t.storage_bytes) for t, new in zip(node.outputs, node.allocates) if new]


def activation_memory(graph: Graph) -> MemoryResult:
    """Total and peak activation bytes of the graph's forward (see module docstring)."""
    last_use: dict[int, int] = {}
    for node in graph.nodes:
        for t in node.inputs:
            last_use[t.storage] = node.index
    # A module's forward holds its arguments in Python locals until it returns, so an
    # argument lives at least to the end of the call, whatever its last reader.
    for call in graph.calls:
        for t in call.inputs:
            if call.last >= last_use.get(t.storage, -1):
                last_use[t.storage] = call.last
    end = len(graph.nodes)
    for t in graph.outputs:
        last_use[t.storage] = end
    frees: dict[int, list[int]] = {}
    live: dict[int, int] = {}
    per_node: list[int] = []
    total = peak = current = 0
    peak_at = -1
    for node in graph.nodes:
        allocs = _allocated(node)
        for storage, nbytes in allocs:
            live[storage] = nbytes
            current += nbytes
            frees.setdefault(max(last_use.get(storage, node.index), node.index), []).append(storage)
        nbytes_here = sum(b for _, b in allocs)
        per_node.append(nbytes_here)
        total += nbytes_here
        if current > peak:
            peak, peak_at = current, node.index
        for storage in frees.pop(node.index, []):
            current -= live.pop(storage)
    return MemoryResult(total, peak, peak_at, tuple(per_node))
