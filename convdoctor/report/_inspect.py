"""Terminal body of an inspect report: the layer table and the totals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table

from ..results.inspect import ModelReport
from ._units import binary_bytes, shape, si
from .terminal import renderer

#: rows deeper than this are folded into their parent unless the caller asks for more.
DEFAULT_DEPTH = 2


def layer_table(report: ModelReport, depth: int = DEFAULT_DEPTH) -> Table:
    """Rows down to ``depth``; the root row is the totals line."""
    table = Table(title=f"Layers (depth <= {depth}; costs include sub-modules)", expand=False)
    for col, justify in (("layer", "left"), ("type", "left"), ("output", "left"), ("params", "right"),
                         ("MACs", "right"), ("other FLOPs", "right"), ("act. mem", "right")):
        table.add_column(col, justify=justify, no_wrap=col != "layer")  # type: ignore[arg-type]
    for row in report.layers:
        if row.depth == 0 or row.depth > depth:
            continue
        indent = "  " * (row.depth - 1)
        name = indent + (row.name.rsplit(".", 1)[-1] if row.depth > 1 else row.name)
        calls = f" x{row.calls}" if row.calls > 1 else ""
        unc = f" (+{row.uncounted} uncounted)" if row.uncounted else ""
        table.add_row(name + calls, row.type, shape(row.output_shape), f"{row.params:,}", si(row.macs) + unc,
                      si(row.other_flops), binary_bytes(row.activation_bytes))
    root = report.layers[0] if report.layers else None
    if root is not None:
        table.add_section()
        table.add_row("total", root.type, shape(root.output_shape), f"{root.params:,}", si(root.macs),
                      si(root.other_flops), binary_bytes(root.activation_bytes), style="bold")
    return table


def totals_table(report: ModelReport) -> Table:
    """The DESIGN totals with units, plus model size by storage format."""
    t = report.totals
    table = Table(title="Totals", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    inputs = ", ".join(shape(s) for s in report.input_shapes)
    table.add_row("input", f"{inputs} ({report.mode} mode)")
    table.add_row("parameters", f"{t['params']:,} ({t['trainable_params']:,} trainable)")
    table.add_row("MACs", f"{t['macs']:,} ({si(t['macs'])}; FLOPs = 2 x MACs = {si(t['flops'])})")
    table.add_row("other FLOPs", f"{t['other_flops']:,} ({si(t['other_flops'])}: norm, pooling, elementwise)")
    sizes = ", ".join(f"{k} {binary_bytes(v)}" for k, v in report.size_as.items())
    table.add_row("parameter memory", f"{binary_bytes(t['param_bytes'])} (as {sizes})")
    table.add_row("activations written", binary_bytes(t["activation_bytes"]))
    table.add_row("peak live activations", binary_bytes(t["peak_activation_bytes"]))
    if report.uncounted_ops:
        table.add_row("uncounted ops", ", ".join(f"{k} x{v}" for k, v in report.uncounted_ops.items()))
    return table


@renderer("inspect")
def body(report: ModelReport, depth: int = DEFAULT_DEPTH) -> Iterable[Any]:
    """Layer table then totals."""
    yield layer_table(report, depth)
    yield totals_table(report)
