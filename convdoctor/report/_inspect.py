"""Terminal body of an inspect report: the layer table and the totals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table

from ..results.inspect import ModelReport
from ._units import binary_bytes, shape, si
from .html import html_section, png_img, table
from .plot import new_figure, to_png
from .terminal import renderer

#: rows deeper than this are folded into their parent unless the caller asks for more.
DEFAULT_DEPTH = 2


def layer_table(report: ModelReport, depth: int = DEFAULT_DEPTH) -> Table:
    """Rows down to ``depth``; the root row is the totals line."""
    table = Table(title=f"Layers (depth <= {depth}; costs include sub-modules)", expand=False)
    for col, justify in (
        ("layer", "left"),
        ("type", "left"),
        ("output", "left"),
        ("params", "right"),
        ("MACs", "right"),
        ("other FLOPs", "right"),
        ("act. mem", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=col != "layer")  # type: ignore[arg-type]
    for row in report.layers:
        if row.depth == 0 or row.depth > depth:
            continue
        indent = "  " * (row.depth - 1)
        name = indent + (row.name.rsplit(".", 1)[-1] if row.depth > 1 else row.name)
        calls = f" x{row.calls}" if row.calls > 1 else ""
        unc = f" (+{row.uncounted} uncounted)" if row.uncounted else ""
        table.add_row(
            name + calls,
            row.type,
            shape(row.output_shape),
            f"{row.params:,}",
            si(row.macs) + unc,
            si(row.other_flops),
            binary_bytes(row.activation_bytes),
        )
    root = report.layers[0] if report.layers else None
    if root is not None:
        table.add_section()
        table.add_row(
            "total",
            root.type,
            shape(root.output_shape),
            f"{root.params:,}",
            si(root.macs),
            si(root.other_flops),
            binary_bytes(root.activation_bytes),
            style="bold",
        )
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


def training_memory_table(tm: dict[str, Any]) -> Table:
    """The training-step estimate: its parts, and the batch that fits the budget."""
    table = Table(title=f"Training memory at batch {tm['batch_size']} (estimate)", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, label in (
        ("param_bytes", "parameters"),
        ("grad_bytes", "gradients"),
        ("optimizer_bytes", "optimizer state"),
        ("saved_activation_bytes", "activations saved for backward"),
        ("total_bytes", "total"),
    ):
        table.add_row(label, binary_bytes(tm[key]))
    table.add_row("per extra sample", binary_bytes(tm["per_sample_bytes"]))
    if tm.get("max_batch") is not None:
        table.add_row(f"largest batch in {binary_bytes(tm['budget_bytes'])}", f"{tm['max_batch']:,}")
    if tm.get("accumulation_steps") is not None:
        table.add_row(
            f"to train at batch {tm['target_batch']:,}",
            f"{tm['accumulation_steps']} x {tm['max_batch']} (convdoctor.fix.GradAccumulator)",
        )
    return table


@renderer("inspect")
def body(report: ModelReport, depth: int = DEFAULT_DEPTH) -> Iterable[Any]:
    """Layer table, totals, and the training-memory estimate when there is one."""
    yield layer_table(report, depth)
    yield totals_table(report)
    if report.training_memory:
        yield training_memory_table(report.training_memory)


def _cost_plot(report: ModelReport, depth: int) -> bytes | None:
    """Horizontal bars of MACs and parameters per module at ``depth`` (None without matplotlib)."""
    rows = [r for r in report.layers if r.depth == depth and (r.macs or r.params)]
    if not rows:
        return None
    try:
        fig = new_figure(9, 0.28 * len(rows) + 1.2, 100, "cost chart")
    except ImportError:
        return None
    ax_m, ax_p = fig.subplots(1, 2, sharey=True)
    names = [r.name for r in rows][::-1]
    ax_m.barh(names, [r.macs for r in rows][::-1], color="#1c7ed6")
    ax_m.set_xlabel("MACs")
    ax_p.barh(names, [r.params for r in rows][::-1], color="#f59f00")
    ax_p.set_xlabel("parameters")
    for ax in (ax_m, ax_p):
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return to_png(fig)


@html_section("inspect")
def html_body(report: ModelReport, depth: int = DEFAULT_DEPTH) -> str:
    """Totals, a MACs/params chart per top-level module, and the layer table."""
    t = report.totals
    totals = table(
        ["total", "value"],
        [
            ["input", ", ".join(shape(s) for s in report.input_shapes) + f" ({report.mode} mode)"],
            ["parameters", f"{t['params']:,} ({t['trainable_params']:,} trainable)"],
            ["MACs", f"{t['macs']:,} ({si(t['macs'])}); FLOPs = {si(t['flops'])}"],
            ["other FLOPs", f"{t['other_flops']:,}"],
            ["parameter memory", binary_bytes(t["param_bytes"])],
            ["peak live activations", binary_bytes(t["peak_activation_bytes"])],
            ["uncounted ops", ", ".join(f"{k} x{v}" for k, v in report.uncounted_ops.items()) or "none"],
        ],
    )
    png = _cost_plot(report, 1)
    chart = f"<h3>MACs and parameters per module</h3>{png_img(png, 'MACs and parameters per module')}" if png else ""
    rows = [
        [
            ("\u00a0\u00a0" * (r.depth - 1)) + r.name,
            r.type,
            shape(r.output_shape),
            f"{r.params:,}",
            f"{r.macs:,}",
            f"{r.other_flops:,}",
            binary_bytes(r.activation_bytes),
        ]
        for r in report.layers
        if 0 < r.depth <= depth
    ]
    layers = table(["layer", "type", "output", "params", "MACs", "other FLOPs", "act. mem"], rows, {3, 4, 5, 6})
    return f"{totals}{chart}<h3>Layers</h3>{layers}"
