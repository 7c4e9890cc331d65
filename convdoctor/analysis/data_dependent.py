"""Which costs depend on the input's content, not only its shape.

A detector's backbone and FPN cost the same for every image of a size; its heads do not:
the RoI heads run once per proposal that survived NMS, the mask head once per detection.
The capture records one run, so those figures hold for the proposals and detections that
run produced. This module finds them: an op whose output size depends on tensor values
(``nonzero``, ``masked_select``, ``unique``, NMS) taints its outputs, and the taint flows
along the graph's producer edges to everything computed from them.

Known limit: sizes that reach Python as numbers (``int(mask.sum())``) and come back as shape
arguments carry no edge; the op that made the number is a ``_local_scalar_dense`` with no
tensor output, so such a path is not marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph
from .flops import FlopResult, OpCost

#: Ops whose output shape depends on tensor values, with the reason.
SIZE_FROM_VALUES: dict[str, str] = {
    "aten.nonzero": "one row per nonzero element (boolean masks, torch.where(mask))",
    "aten.masked_select": "one element per True in the mask",
    "aten._unique2": "one element per distinct value",
    "aten.unique_dim": "one slice per distinct slice",
    "aten.unique_consecutive": "one element per run of equal values",
    "torchvision.nms": "one index per box that survives non-maximum suppression",
}


@dataclass(frozen=True)
class DataDependence:
    """The part of the graph whose cost follows the input's content.

    Attributes:
        nodes: indices of the graph nodes computed from a value-sized tensor.
        macs: MACs of those nodes (counted for this run's sizes).
        sources: op name -> calls, for the ops that size tensors by value.
        assumed: module path -> leading size of the value-sized input it ran on (the number
            of proposals or detections), for the outermost such modules that do MACs.
    """

    nodes: frozenset[int]
    macs: int
    sources: dict[str, int] = field(default_factory=dict)
    assumed: dict[str, int] = field(default_factory=dict)


def data_dependence(graph: Graph, flops: FlopResult) -> DataDependence:
    """Propagate value-sized shapes through the graph (see the module docstring)."""
    tainted: set[int] = set()
    sources: dict[str, int] = {}
    for node in graph.nodes:
        if node.packet in SIZE_FROM_VALUES:
            sources[node.packet] = sources.get(node.packet, 0) + 1
            tainted.add(node.index)
        elif any(t.producer[0] in tainted for t in node.inputs):
            tainted.add(node.index)
    macs = sum(c.macs for i, c in enumerate(flops.costs) if i in tainted and isinstance(c, OpCost))
    return DataDependence(frozenset(tainted), macs, sources, _assumed(graph, flops, tainted))


def _assumed(graph: Graph, flops: FlopResult, tainted: set[int]) -> dict[str, int]:
    """Outermost modules that ran on a value-sized input and do MACs; a submodule is kept only
    when its count differs from its kept ancestor's (a mask head on detections inside RoI heads
    on proposals)."""
    found: dict[str, int] = {}
    for call in sorted(graph.calls, key=lambda c: (c.path.count("."), c.first)):
        if not call.path:
            continue
        sized = [t for t in call.inputs if t.producer[0] in tainted and t.shape]
        work = sum(c.macs for c in flops.costs[call.first : call.last + 1] if isinstance(c, OpCost))
        if not sized or not work:
            continue
        count = int(sized[0].shape[0])
        ancestors = [n for p, n in found.items() if call.path.startswith(p + ".") or call.path == p]
        if count not in ancestors:
            found[call.path] = count
    return found
