"""Terminal body of an rf report: the focus layer's summary and the per-layer table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from ..results.rf import RFReport
from .html import html_section, png_img
from .html import table as html_table
from .terminal import renderer

#: rows deeper than this (module path depth) are left out unless the caller asks for more
DEFAULT_DEPTH = 2

#: one letter per flag, explained under the table
FLAGS = (
    ("global_", "G", "global path (a spatial mean or global pooling sees the whole input)"),
    ("inexact", "~", "outer bound (upsampling, strided transposed conv, uneven adaptive pooling, channel slice)"),
    ("misaligned", "M", "merged paths with different jumps or centres"),
    ("whole", "W", "flatten + linear read the whole map"),
    ("uncounted", "?", "unknown: an op without a receptive-field rule"),
)


def fmt_num(v: Any) -> str:
    """An int as is, a fraction with two decimals, None as a dash."""
    if v is None:
        return "-"
    f = float(v)
    return str(int(f)) if f == int(f) else f"{f:.2f}"


def fmt_axes(values: Sequence[Any]) -> str:
    """``(195, 195)`` -> ``195``; ``(195, 131)`` -> ``195x131``."""
    texts = [fmt_num(v) for v in values]
    return texts[0] if len(set(texts)) == 1 else "x".join(texts)


def flags(row: Any) -> str:
    """The flag letters of one layer entry."""
    state = {
        "global_": row.global_,
        "inexact": not row.exact,
        "misaligned": not row.aligned,
        "whole": row.whole,
        "uncounted": row.uncounted is not None,
    }
    return "".join(letter for key, letter, _ in FLAGS if state[key])


def _size(row: Any) -> str:
    if row.uncounted is not None:
        return "?"
    if all(s is None for s in row.size):
        return "global" if row.global_ else "-"
    return fmt_axes(row.size)


def layer_table(report: RFReport, depth: int = DEFAULT_DEPTH) -> Table:
    """One row per module call down to ``depth`` (the focus layer always shows)."""
    title = f"Receptive field per layer (input pixels; depth <= {depth})"
    table = Table(title=title, expand=False)
    for col, justify in (
        ("layer", "left"),
        ("type", "left"),
        ("output", "left"),
        ("size", "right"),
        ("jump", "right"),
        ("start", "right"),
        ("sees", "right"),
        ("flags", "left"),
    ):
        table.add_column(col, justify=justify, no_wrap=col != "layer")  # type: ignore[arg-type]
    for row in report.layers:
        level = row.name.count(".") + 1 if row.name else 0
        if level > depth and row.name != report.focus:
            continue
        name = ("  " * max(level - 1, 0) + (row.name or "<model>")) + (f" #{row.call + 1}" if row.call else "")
        sees = "-" if row.coverage is None else f"{100 * row.coverage:.1f}%"
        style = "bold" if row.name == report.focus else None
        table.add_row(
            name,
            row.type,
            "x".join(str(d) for d in row.output_shape),
            _size(row),
            fmt_axes(row.jump),
            fmt_axes(row.start),
            sees,
            flags(row),
            style=style,
        )
    return table


def summary(report: RFReport) -> Table:
    """The focus layer in words: size, jump, start, centre, share of the input."""
    table = Table(title="Focus layer", show_header=False)
    table.add_column("what")
    table.add_column("value")
    row = report.focus_layer
    inp = "x".join(str(d) for d in report.input_shape)
    table.add_row("input", f"{inp} (method: {report.method})")
    if row is None:
        return table
    table.add_row("layer", f"{row.name or '<model>'} ({row.type}), output {'x'.join(map(str, row.output_shape))}")
    table.add_row("field size", f"{_size(row)} px" + (" + global paths" if row.global_ and row.local else ""))
    table.add_row("jump (effective stride)", fmt_axes(row.jump))
    table.add_row("unit 0 starts at / centred at", f"{fmt_axes(row.start)} / {fmt_axes(row.center)}")
    if row.coverage is not None:
        table.add_row(
            "one unit sees",
            f"{100 * row.coverage:.1f}% of the input" + (" (field larger than the input)" if row.exceeds_input else ""),
        )
    if row.clipped is not None and any(row.clipped):
        table.add_row("clipped", "the measured support touches the input border: the field may reach beyond")
    if report.object_size is not None:
        table.add_row("object size", f"{fmt_axes(report.object_size)} px")
    return table


@renderer("rf")
def render_rf(report: RFReport, depth: int = DEFAULT_DEPTH, **_: Any) -> Iterable[Any]:
    """Summary, per-layer table, and the flag legend."""
    yield summary(report)
    yield layer_table(report, depth)
    yield Text("flags: " + "; ".join(f"{letter} {text}" for _, letter, text in FLAGS), style="dim")


@html_section("rf")
def html_rf(report: RFReport, depth: int = DEFAULT_DEPTH) -> str:
    """Focus-layer summary, the field-by-depth plot, and the per-layer table."""
    row = report.focus_layer
    facts = [["input", "x".join(str(d) for d in report.input_shape) + f" (method: {report.method})"]]
    if row is not None:
        facts += [
            ["focus layer", f"{row.name or '<model>'} ({row.type})"],
            ["field size (px)", _size(row)],
            ["jump", fmt_axes(row.jump)],
            ["start", fmt_axes(row.start)],
        ]
        if row.coverage is not None:
            facts.append(["one unit sees", f"{100 * row.coverage:.1f}% of the input"])
    try:
        from .rf_plot import rf_depth_plot

        chart = "<h3>Receptive field by depth</h3>" + png_img(rf_depth_plot(report), "receptive field by depth")
    except ImportError:
        chart = ""
    rows = []
    for r in report.layers:
        level = r.name.count(".") + 1 if r.name else 0
        if level > depth and r.name != report.focus:
            continue
        rows.append(
            [
                ("\u00a0\u00a0" * max(level - 1, 0)) + (r.name or "<model>"),
                r.type,
                "x".join(map(str, r.output_shape)),
                _size(r),
                fmt_axes(r.jump),
                fmt_axes(r.start),
                flags(r),
            ]
        )
    layers = html_table(["layer", "type", "output", "size", "jump", "start", "flags"], rows, {3, 4, 5})
    return html_table(["what", "value"], facts) + chart + "<h3>Layers</h3>" + layers
