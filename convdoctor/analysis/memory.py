"""Activation memory: total bytes written by ops, and the peak live bytes of one forward.

Liveness works on *storages*, not tensors: a view or an in-place result shares its
base's storage (from the op schema's alias sets, recorded at capture), and a storage is
freed after the last op that reads any tensor living in it. The model's outputs stay
alive to the end; its inputs, parameters and buffers are not activations and are not
counted. This is what the CPU caching-free allocator sees in one ``no_grad`` forward,
minus kernel workspaces (which no graph shows). A module's arguments live until its
forward returns (Python holds them), even after their last reader.

Two places where the graph and the CPU allocator differ, and what we do:

* **Max-pooling indices.** ``max_pool1d``/``max_pool2d`` call the ``*_with_indices`` op only
  when autograd needs the indices, off CPU, or for a tensor subclass, which the capture's
  fake tensors are. A plain CPU forward runs the kernel without indices, so an indices
  output that nothing reads is not counted. (On CUDA the kernel writes them and the caller
  drops them at once: the peak at such a pool is higher there by the indices' bytes.)
* **Python locals (a lower bound).** A ``forward`` that keeps a tensor in a local variable
  after its last reader keeps it alive until the local is rebound or the function returns;
  dispatch shows no locals, so such a tensor is freed here at its last reader. torchvision's
  ``_DenseLayer`` holds ``concated_features`` to the end of ``bn_function`` (through conv1)
  and ``bottleneck_output`` to the end of ``forward`` (through conv2): densenet121's peak is
  16% under the allocator's, and exact to the byte once those two lifetimes are extended
  (``tests/analysis/test_memory.py``). The peak is a lower bound for such models.
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


#: Pooling ops whose CPU no-grad kernel writes no indices (see the module docstring).
_INDICES_ONLY_FOR_AUTOGRAD = frozenset({"aten.max_pool1d_with_indices", "aten.max_pool2d_with_indices"})


def _allocated(node: OpNode, read: set[int]) -> list[tuple[int, int]]:
    """``(storage, bytes)`` of the outputs this op allocates on a CPU no-grad forward."""
    out = [(t.storage, t.storage_bytes) for t, new in zip(node.outputs, node.allocates) if new]
    if node.packet in _INDICES_ONLY_FOR_AUTOGRAD and len(node.outputs) == 2 and node.outputs[1].storage not in read:
        out = [(storage, nbytes) for storage, nbytes in out if storage != node.outputs[1].storage]
    return out


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
    read = set(last_use)
    frees: dict[int, list[int]] = {}
    live: dict[int, int] = {}
    per_node: list[int] = []
    total = peak = current = 0
    peak_at = -1
    for node in graph.nodes:
        allocs = _allocated(node, read)
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
