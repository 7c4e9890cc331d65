"""Terminal and HTML bodies of a monitor report: the run summary, epochs, layers, parameter
groups, and (HTML, when drawn) the loss and gradient-norm plots."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rich.table import Table
from rich.text import Text

from ..results.monitor import MonitorReport
from .html import esc, html_section, png_img, table
from .monitor_plot import monitor_figures
from .terminal import renderer

#: Layers listed in the terminal (first and last by depth; the JSON holds every one).
TERMINAL_LAYERS = 12


def _num(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


EPOCH_COLUMNS = ["epoch", "step", "train loss", "train acc", "val loss", "val acc"]
LAYER_COLUMNS = ["layer", "grad norm", "weight norm", "grad / weight", "dead units"]
GROUP_COLUMNS = ["group", "lr", "update / weight"]


def _epoch_rows(report: MonitorReport) -> list[list[str]]:
    return [
        [
            str(e["epoch"]),
            str(e["step"]),
            _num(e.get("train_loss")),
            _num(e.get("train_acc"), "{:.1%}"),
            _num(e.get("val_loss")),
            _num(e.get("val_acc"), "{:.1%}"),
        ]
        for e in report.epochs
    ]


def _layer_rows(report: MonitorReport, limit: int | None = None) -> list[list[str]]:
    layers = list(report.layers)
    if limit is not None and len(layers) > limit:
        half = limit // 2
        layers = layers[:half] + [{"name": f"... {len(layers) - 2 * half} more"}] + layers[-half:]
    return [
        [
            row["name"],
            _num(row.get("grad_norm"), "{:.3g}"),
            _num(row.get("weight_norm"), "{:.3g}"),
            _num(row.get("relative_grad"), "{:.3g}"),
            f"{row['dead_units']} / {row['units']}" if row.get("units") else "-",
        ]
        for row in layers
    ]


def _group_rows(report: MonitorReport) -> list[list[str]]:
    return [[g["name"], _num(g["lr"], "{:.3g}"), _num(g["update_ratio"], "{:.2e}")] for g in report.groups]


def _rich(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    out = Table(title=title, expand=False)
    for i, col in enumerate(columns):
        out.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*row)
    return out


def _overview(report: MonitorReport) -> str:
    loss = report.loss
    return (
        f"{report.steps} steps (statistics every {report.every}); loss {_num(loss.get('initial'))} at start, "
        f"best {_num(loss.get('best'))} at step {loss.get('best_step', '-')}, now {_num(loss.get('last'))}; "
        f"gradient norm {_num(report.grad_norm.get('initial'), '{:.3g}')} at start, "
        f"now {_num(report.grad_norm.get('last'), '{:.3g}')}"
    )


@renderer("monitor")
def render_monitor(report: MonitorReport, *, layers: int = TERMINAL_LAYERS, **_: Any) -> Iterable[Any]:
    """The summary line, then the epoch, layer and group tables that have rows.

    Args:
        report: the monitor report.
        layers: most layers listed (first and last halves by depth).
    """
    yield Text(report.summary)
    yield Text(_overview(report))
    if report.epochs:
        yield _rich("Epochs", EPOCH_COLUMNS, _epoch_rows(report))
    if report.layers:
        yield _rich(f"Layers at step {report.steps} (depth order)", LAYER_COLUMNS, _layer_rows(report, layers))
    if report.groups:
        yield _rich("Parameter groups", GROUP_COLUMNS, _group_rows(report))


@html_section("monitor")
def html_monitor(report: MonitorReport) -> str:
    """Summary, the loss and gradient plots (when drawn), then the epoch, layer and group tables."""
    parts = [f"<p>{esc(report.summary)}</p><p>{esc(_overview(report))}</p>"]
    figures = monitor_figures(report)
    for name, png in figures:
        parts.append(png_img(png, name))
    if not figures:
        parts.append("<p>Plots: build the report with <code>mon.report(figures=True)</code>.</p>")
    for title, columns, rows in (
        ("Epochs", EPOCH_COLUMNS, _epoch_rows(report)),
        ("Layers (depth order)", LAYER_COLUMNS, _layer_rows(report)),
        ("Optimizer parameter groups", GROUP_COLUMNS, _group_rows(report)),
    ):
        if rows:
            cells: list[list[object]] = [list(r) for r in rows]
            parts.append(f"<h3>{esc(title)}</h3>" + table(columns, cells, numeric=set(range(1, len(columns)))))
    return "".join(parts)
