"""Bench report bodies: terminal (latency, comparison, top layers, peaks) and HTML (the same, plus the plot)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table
from rich.text import Text

from ..results.bench import BenchReport, BenchRow
from ._units import binary_bytes, si
from .html import esc, html_section, png_img, table
from .terminal import renderer

#: Layers shown per row in the terminal (the JSON holds every one measured).
TERMINAL_TOP = 5
#: Model names fold rather than shrink below this many characters.
MODEL_MIN_WIDTH = 14


def _num(value: float | int | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _si(value: float | int | None) -> str:
    return "-" if value is None else si(value)


def _bytes(value: int | None) -> str:
    return "-" if value is None else binary_bytes(value)


def latency_table(report: BenchReport) -> Table:
    """One line per (model, batch size): warm percentiles, throughput, cold start, memory, rate."""
    where = sorted({f"{r.device}, {r.threads} threads, {r.dtype}" for r in report.rows})
    table = Table(
        title=f"Latency in ms on {'; '.join(where)} (warm: after warm-up; cold start: fresh process, "
        "load + first inference)"
    )
    for col in (
        "model",
        "batch",
        "p50",
        "p90",
        "p99",
        "IQR",
        "samples/s",
        "1st call",
        "cold start",
        "peak mem",
        "GMAC/s",
        "bound",
    ):
        if col == "model":
            table.add_column(col, overflow="fold", min_width=MODEL_MIN_WIDTH)
        else:
            table.add_column(col, justify="right", no_wrap=True)
    for r in report.rows:
        table.add_row(
            r.model,
            str(r.batch_size),
            _num(r.p50_ms),
            _num(r.p90_ms),
            _num(r.p99_ms),
            f"{r.rel_iqr:.0%}",
            _num(r.throughput, "{:.1f}"),
            _num(r.first_call_ms, "{:.1f}"),
            _num(r.cold_start_ms, "{:.0f}"),
            _bytes(r.peak_mem_bytes),
            _num(r.gmacs_per_s, "{:.1f}"),
            _bound(r.bound),
        )
    return table


def _bound(label: str | None) -> str:
    """``"memory-bound"`` -> ``"memory"`` (the column header says bound)."""
    return label.removesuffix("-bound") if label else "-"


def comparison_table(report: BenchReport) -> Table:
    """MACs and params next to p50/p99/throughput, each as a ratio to the first model."""
    ref = report.models[0]
    table = Table(title=f"Comparison (ratios to {ref}: compare the MACs ratio with the p50 ratio)")
    for col in (
        "model",
        "batch",
        "MACs",
        "params",
        "p50 ms",
        "p99 ms",
        "samples/s",
        "MACs x",
        "p50 x",
        "p99 x",
        "samples/s x",
    ):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col != "model")
    for ratio in report.ratios():
        r = report.row(ratio.model, ratio.batch_size)
        assert r is not None
        table.add_row(
            r.model,
            str(r.batch_size),
            _si(r.macs),
            _si(r.params),
            _num(r.p50_ms),
            _num(r.p99_ms),
            _num(r.throughput, "{:.1f}"),
            _num(ratio.macs_ratio, "{:.2f}"),
            _num(ratio.p50_ratio, "{:.2f}"),
            _num(ratio.p99_ratio, "{:.2f}"),
            _num(ratio.throughput_ratio, "{:.2f}"),
        )
    return table


def layers_table(row: BenchRow, top: int = TERMINAL_TOP) -> Table:
    """The slowest leaf modules of one row."""
    table = Table(title=f"Where the time goes: {row.model}, batch {row.batch_size} (profiled, top {top})")
    for col in ("module", "type", "ms", "share", "MACs", "GMAC/s", "MAC/byte", "bound"):
        table.add_column(col, justify="left" if col in ("module", "type") else "right")
    for layer in row.layers[:top]:
        table.add_row(
            layer.name or "(root)",
            layer.type,
            _num(layer.time_ms, "{:.3f}"),
            f"{layer.share:.0%}",
            _si(layer.macs),
            _num(layer.gmacs_per_s, "{:.1f}"),
            _num(layer.intensity, "{:.1f}"),
            _bound(layer.bound),
        )
    return table


def machine_line(report: BenchReport) -> Text:
    """The machine's measured peaks, or why there are none."""
    m = report.machine
    if "gmacs_per_s" not in m:
        return Text(f"machine peaks: none ({m.get('reason', 'not measured')})", style="dim")
    cached = "cached " if m.get("cached") else ""
    return Text(
        f"machine: {m['device_name']}, {m['threads']} threads, {m['dtype']}: matmul {m['gmacs_per_s']:.1f} GMAC/s, "
        f"copy {m['gbytes_per_s']:.1f} GB/s, ridge {m['ridge_macs_per_byte']:.1f} MAC/byte "
        f"({cached}{m['measured_at']})",
        style="dim",
    )


def _notes(report: BenchReport) -> Iterable[Text]:
    for r in report.rows:
        for w in r.warnings:
            yield Text(f"note: {r.model} batch {r.batch_size}: {w}", style="dim")
        if r.cold_start_reason:
            yield Text(f"note: {r.model} batch {r.batch_size}: cold start absent: {r.cold_start_reason}", style="dim")


@renderer("bench")
def render_bench(report: BenchReport) -> list[Any]:
    """Latency table; the comparison when several models; the top layers when one model."""
    parts: list[Any] = [latency_table(report)]
    if len(report.models) > 1:
        parts.append(comparison_table(report))
    else:
        parts.extend(layers_table(r) for r in report.rows if r.layers)
    parts.append(machine_line(report))
    parts.extend(_notes(report))
    return parts


def _html_rows(report: BenchReport) -> str:
    rows = [
        [
            r.model,
            r.batch_size,
            r.threads,
            f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.rel_iqr:.0%}",
            f"{r.throughput:.1f}",
            _num(r.first_call_ms, "{:.1f}"),
            _num(r.cold_start_ms, "{:.0f}"),
            _bytes(r.peak_mem_bytes),
            _si(r.macs),
            _num(r.gmacs_per_s, "{:.1f}"),
            r.bound or "-",
        ]
        for r in report.rows
    ]
    return table(
        [
            "model",
            "batch",
            "threads",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "IQR",
            "samples/s",
            "first call ms",
            "cold start ms",
            "peak mem",
            "MACs",
            "GMAC/s",
            "bound",
        ],
        rows,
        set(range(1, 13)),
    )


def _html_ratios(report: BenchReport) -> str:
    rows = [
        [
            x.model,
            x.batch_size,
            _num(x.macs_ratio),
            _num(x.params_ratio),
            f"{x.p50_ratio:.2f}",
            f"{x.p99_ratio:.2f}",
            f"{x.throughput_ratio:.2f}",
        ]
        for x in report.ratios()
    ]
    return f"<h3>Ratios to {esc(report.models[0])}</h3>" + table(
        ["model", "batch", "MACs x", "params x", "p50 x", "p99 x", "samples/s x"], rows, set(range(1, 7))
    )


@html_section("bench")
def html_body(report: BenchReport) -> str:
    """Latency table, ratios (several models), the latency-vs-batch plot, top layers, machine peaks."""
    from .plot import latency_plot

    parts = [_html_rows(report)]
    if len(report.models) > 1:
        parts.append(_html_ratios(report))
    if report.rows:
        parts.append("<h3>Latency vs batch size</h3>" + png_img(latency_plot(report), "latency vs batch size"))
    for r in report.rows if len(report.models) == 1 else ():
        layers: list[list[object]] = [
            [
                x.name or "(root)",
                x.type,
                f"{x.time_ms:.3f}",
                f"{x.share:.0%}",
                _si(x.macs),
                _num(x.gmacs_per_s, "{:.1f}"),
                _num(x.intensity, "{:.1f}"),
                x.bound or "-",
            ]
            for x in r.layers
        ]
        if layers:
            parts.append(
                f"<h3>Where the time goes: batch {r.batch_size}</h3>"
                + table(
                    ["module", "type", "ms", "share", "MACs", "GMAC/s", "MAC/byte", "bound"], layers, {2, 3, 4, 5, 6}
                )
            )
    notes = [machine_line(report).plain, *(t.plain for t in _notes(report))]
    parts.append("".join(f"<p>{esc(n)}</p>" for n in notes))
    return "".join(parts)
