"""PNG charts of a monitored run, drawn from the plot data a :class:`MonitorReport` carries.

The loss curve marks the steps where findings fired; the gradient chart draws the norm of each
conv/linear weight over time, coloured from the first layer (blue) to the last (red); the
histogram charts (:mod:`.histogram_plot`) show each layer's gradients and activations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..results.monitor import MonitorReport
from .histogram_plot import has_histograms, histogram_png
from .plot import new_figure, to_png

#: Most layers drawn in the gradient plot (evenly spaced across depth beyond that).
MAX_LAYERS = 10
#: Width of the running mean drawn over the batch losses (batch-to-batch noise hides the trend).
SMOOTH = 10


def _figure(what: str) -> Any:
    fig = new_figure(8, 4, 100, what)
    fig.set_layout_engine("constrained")
    return fig


def loss_png(history: dict[str, Any]) -> bytes:
    """The loss per step, its ``SMOOTH``-step running mean, and a marker where each finding fired."""
    fig = _figure("monitor loss plot")
    ax = fig.add_subplot()
    steps, loss = np.asarray(history["loss_step"]), np.asarray(history["loss"], dtype=np.float64)
    ok = np.isfinite(loss)
    ax.plot(steps[ok], loss[ok], color="0.75", linewidth=0.8, label="batch loss")
    if ok.sum() >= SMOOTH:
        smooth = np.convolve(np.where(ok, loss, np.nan), np.ones(SMOOTH) / SMOOTH, mode="valid")
        ax.plot(steps[SMOOTH - 1 :], smooth, color="C0", linewidth=1.5, label=f"{SMOOTH}-step mean")
    for i, event in enumerate(history.get("events", [])):
        ax.axvline(event["step"], color=f"C{1 + i % 8}", linestyle="--", linewidth=1)
        ax.annotate(
            event["code"],
            (event["step"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
        )
    if ok.any() and loss[ok].min() > 0 and loss[ok].max() / loss[ok].min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss and findings")
    ax.legend(loc="upper right", fontsize=8)
    return to_png(fig)


def grad_png(history: dict[str, Any]) -> bytes:
    """Gradient L2 norm of each conv/linear weight over the sampled steps (log scale)."""
    fig = _figure("monitor gradient plot")
    ax = fig.add_subplot()
    names = list(history["param_names"])
    weights = [i for i, n in enumerate(names) if n in set(history.get("weight_params", names))]
    if len(weights) > MAX_LAYERS:
        weights = [weights[round(k)] for k in np.linspace(0, len(weights) - 1, MAX_LAYERS)]
    grad = np.asarray(history["grad"], dtype=np.float64).reshape(len(history["grad_step"]), -1)
    for rank, i in enumerate(weights):
        g = grad[:, i] if grad.size else np.zeros(0)
        ok = np.isfinite(g) & (g > 0)
        color = (rank / max(1, len(weights) - 1), 0.2, 1 - rank / max(1, len(weights) - 1))
        ax.plot(
            np.asarray(history["grad_step"])[ok],
            g[ok],
            color=color,
            linewidth=1,
            label=names[i].rpartition(".")[0] or names[i],
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm")
    ax.set_title("Gradient norm by layer (blue: first, red: last)")
    if weights:
        ax.legend(loc="best", fontsize=7, ncol=2)
    return to_png(fig)


def monitor_figures(report: MonitorReport) -> tuple[tuple[str, bytes], ...]:
    """``(("loss", png), ("grad_norms", png))`` from the report's plot data, then
    ``("grad_histograms", png), ("activation_histograms", png)`` when it holds histograms;
    empty without plot data."""
    history = report.history
    if not history or not history.get("loss"):
        return ()
    figures = [("loss", loss_png(history)), ("grad_norms", grad_png(history))]
    if has_histograms(history):
        figures += [
            ("grad_histograms", histogram_png(history, "grad")),
            ("activation_histograms", histogram_png(history, "act")),
        ]
    return tuple(figures)


def save_monitor_plots(report: MonitorReport, directory: str | Path) -> list[Path]:
    """Write ``loss.png``, ``grad_norms.png`` (and, with histograms, ``grad_histograms.png`` and
    ``activation_histograms.png``) into ``directory`` (created) and return their paths.

    Args:
        report: a report built with ``Monitor.report(figures=True)`` (which carries the plot data).
        directory: where to write.

    Raises:
        ValueError: the report carries no plot data.
    """
    figures = monitor_figures(report)
    if not figures:
        raise ValueError("the report carries no plot data: build it with mon.report(figures=True)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in figures:
        path = out / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths
