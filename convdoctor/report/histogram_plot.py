"""PNG charts of a monitored run's per-layer histograms (gradients, activations).

Drawn from ``history["histograms"]`` (``Monitor.history()``): the bins are signed powers of two
(their right edges in ``limits``), so the x axis reads ``-2^k ... 0 ... 2^k`` and a distribution
spanning ten orders of magnitude stays readable. One panel per layer (up to ``MAX_PANELS``,
evenly spaced over depth), the first recorded step in grey behind the latest in colour: the
picture the debug guide asks for ("plot gradient histograms per layer"), at step 0 and now.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .plot import new_figure, to_png

#: Most layers drawn (first and last included, evenly spaced across depth beyond that).
MAX_PANELS = 12
#: Panels per row.
COLUMNS = 4
#: What each kind is called in titles.
KINDS = {"grad": "Gradient", "act": "Activation (conv/linear output)"}


def has_histograms(history: dict[str, Any] | None) -> bool:
    """Whether the plot data carries at least one histogram step."""
    hist = (history or {}).get("histograms") or {}
    return bool(hist.get("steps"))


def _ticks(limits: list[float]) -> tuple[list[int], list[str]]:
    """Bin positions and labels every 8 powers of two on each side, and 0."""
    zero = limits.index(0.0)
    pos, labels = [zero], ["0"]
    for i, edge in enumerate(limits):
        if edge > 0 and i > zero:
            k = int(round(math.log2(edge))) - 1
            if k % 8 == 0:
                pos += [i, 2 * zero - i]
                labels += [f"2^{k}", f"-2^{k}"]
    return pos, labels


def histogram_png(history: dict[str, Any], kind: str) -> bytes:
    """Per-layer histograms of ``kind`` (``"grad"`` or ``"act"``): first step grey, latest coloured."""
    hist = history["histograms"]
    steps = hist["steps"]
    first, last = steps[0], steps[-1]
    layers = list(last["layers"])
    if len(layers) > MAX_PANELS:
        layers = [layers[round(k)] for k in np.linspace(0, len(layers) - 1, MAX_PANELS)]
    rows = max(1, math.ceil(len(layers) / COLUMNS))
    fig = new_figure(2.6 * COLUMNS, 1.9 * rows + 0.6, 90, "monitor histogram plot")
    fig.set_layout_engine("constrained")
    limits = list(hist["limits"])
    ticks, labels = _ticks(limits)
    x = np.arange(len(limits))
    for n, name in enumerate(layers):
        ax = fig.add_subplot(rows, COLUMNS, n + 1)
        for step, color, label in ((first, "0.7", f"step {first['step']}"), (last, "C0", f"step {last['step']}")):
            if name not in step["layers"]:
                continue
            counts = np.asarray(step[kind][step["layers"].index(name)], dtype=np.float64)[: len(limits)]
            if counts.sum() > 0:
                ax.stairs(counts / counts.sum(), np.append(x, len(x)) - 0.5, color=color, label=label, fill=False)
        ax.set_title(name or "root", fontsize=8)
        ax.set_xticks(ticks, labels, fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
        if n == 0:
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{KINDS[kind]} histograms by layer (share of elements per power-of-two bin)", fontsize=10)
    return to_png(fig)
