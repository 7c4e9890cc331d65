"""Terminal body of a monitor report: the run summary, epochs, layers and parameter groups."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rich.table import Table
from rich.text import Text

from ..results.monitor import MonitorReport
from .terminal import renderer

#: Layers listed in the terminal (first and last by depth; the JSON holds every one).
TERMINAL_LAYERS = 12


def _num(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return fmt.format(value)


def _epochs(report: MonitorReport) -> Table:
    table = Table(title="Epochs", expand=False)
    for col in ("epoch", "step", "train loss", "train acc", "val loss", "val acc"):
        table.add_column(col, justify="right")
    for e in report.epochs:
        table.add_row(str(e["epoch"]), str(e["step"]), _num(e.get("train_loss")), _num(e.get("train_acc"), "{:.1%}"),
                      _num(e.get("val_loss")), _num(e.get("val_acc"), "{:.1%}"))
    return table


def _layers(report: MonitorReport) -> Table:
    layers = list(report.layers)
    if len(layers) > TERMINAL_LAYERS:
        half = TERMINAL_LAYERS // 2
        layers = layers[:half] + [{"name": f"... {len(layers) - 2 * half} more"}] + layers[-half:]
    table = Table(title=f"Layers at step {report.steps} (depth order)", expand=False)
    for col, justify in (("layer", "left"), ("grad norm", "right"), ("weight norm", "right"),
                         ("grad / weight", "right"), ("dead units", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in layers:
        dead = f"{row['dead_units']} / {row['units']}" if row.get("units") else "-"
        table.add_row(row["name"], _num(row.get("grad_norm"), "{:.3g}"), _num(row.get("weight_norm"), "{:.3g}"),
                      _num(row.get("relative_grad"), "{:.3g}"), dead)
    return table


def _groups(report: MonitorReport) -> Table:
    table = Table(title="Optimizer parameter groups (last measured step)", expand=False)
    for col in ("group", "lr", "update / weight"):
        table.add_column(col, justify="right")
    for g in report.groups:
        table.add_row(g["name"], _num(g["lr"], "{:.3g}"), _num(g["update_ratio"], "{:.2e}"))
    return table


@renderer("monitor")
def render_monitor(report: MonitorReport) -> Iterable[Any]:
    """The summary line, then the epoch, layer and group tables that have rows."""
    loss = report.loss
    yield Text(report.summary)
    yield Text(f"{report.steps} steps (statistics every {report.every}); loss {_num(loss.get('initial'))} at start, "
               f"best {_num(loss.get('best'))} at step {loss.get('best_step', '-')}, now {_num(loss.get('last'))}; "
               f"gradient norm {_num(report.grad_norm.get('initial'), '{:.3g}')} at start, "
               f"now {_num(report.grad_norm.get('last'), '{:.3g}')}")
    if report.epochs:
        yield _epochs(report)
    if report.layers:
        yield _layers(report)
    if report.groups:
        yield _groups(report)
