"""In-place writes through views: the field reaches the tensor that was written into.

torchvision's detectors batch their images like this::

    batched = images[0].new_full(batch_shape, 0)
    batched[i, :c, :h, :w].copy_(img)

The graph sees ``select``/``slice`` views of ``batched`` and a ``copy_`` into the last
view; later ops read ``batched`` itself, whose producer (``new_full``) carries no field.
:class:`Aliases` remembers which view comes from which base and lifts a written field
back through the view chain. Only chains it can follow exactly are lifted: ``select`` of
a dim that holds no spatial axis (the batch index) and ``slice`` from 0 with step 1 (the
zero-padded corner); any other chain makes the base unknown, with the op named, rather
than leaving it at "no dependence".
"""

from __future__ import annotations

from typing import Any

from ...graph import OpNode, TensorInfo
from ._field import Field, join, plain_dim, uncounted
from ._registry import bound, norm_dim

Producer = tuple[int, int]
Step = tuple[str, dict[str, Any], tuple[int, ...]]  # (packet, bound args, shape of the view's input)

_VIEWS = frozenset({"aten.select", "aten.slice", "aten.alias"})


class Aliases:
    """Which values are views of which base, and how to lift a write back to the base."""

    def __init__(self) -> None:
        self._base: dict[Producer, tuple[Producer, tuple[Step, ...]]] = {}

    def record(self, node: OpNode) -> None:
        """Note a view op's output as a view of its input's base."""
        if node.packet not in _VIEWS or not node.args or not isinstance(node.args[0], TensorInfo):
            return
        src = node.args[0]
        base, chain = self._base.get(src.producer, (src.producer, ()))
        step: Step = (node.packet, bound(node), tuple(int(n) for n in src.shape))
        self._base[(node.index, 0)] = (base, (*chain, step))

    def write_back(self, node: OpNode, written: Field | None, fields: dict[Producer, Field]) -> None:
        """After an in-place op into a view, give the view's base the written field."""
        if written is None or not node.packet.endswith("_") or not node.args:
            return
        dst = node.args[0]
        if not isinstance(dst, TensorInfo) or dst.producer not in self._base:
            return
        base, chain = self._base[dst.producer]
        lifted = _lift(written, chain, node.packet)
        old = fields.get(base)
        if old is None or lifted.uncounted:
            fields[base] = lifted
        elif old.uncounted is None and old.layout == lifted.layout:
            fields[base] = join([old, lifted], old.layout, [[*a, *b] for a, b in zip(old.axes, lifted.axes)])
        else:
            fields[base] = uncounted(f"{node.packet} writes into a view of a tensor laid out differently")


def _lift(f: Field, chain: tuple[Step, ...], op: str) -> Field:
    if f.uncounted:
        return f
    layout = list(f.layout)
    for packet, args, shape in reversed(chain):
        if packet == "aten.alias":
            continue
        d = norm_dim(int(args["dim"]), len(shape))
        if packet == "aten.select":
            present = {a for dim in layout for a, n in dim if a >= 0}
            if len(present) < len(f.axes):  # the selected dim might have been a spatial one
                return uncounted(f"{op} writes through a select that may drop a spatial axis")
            layout.insert(d, plain_dim(shape[d]))
            continue
        start, step = args.get("start") or 0, args.get("step") or 1
        if start != 0 or step != 1 or len(layout[d]) > 1:
            return uncounted(f"{op} writes through a slice convdoctor cannot follow (start {start}, step {step})")
        layout[d] = ((layout[d][0][0], shape[d]),) if layout[d] else plain_dim(shape[d])
    return f.with_(layout=tuple(layout))
