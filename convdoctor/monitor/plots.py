"""PNG plots of a monitored run: the loss curve with the steps where findings fired, and the
gradient norm of each conv/linear layer over time.

matplotlib is imported here only, and through its object API (``Figure`` + the Agg canvas),
so the user's pyplot state and backend are left alone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

#: Most layers drawn in the gradient plot (evenly spaced across depth beyond that).
MAX_LAYERS = 10


def _figure() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a core dependency
        raise UsageError("plots need matplotlib: pip install matplotlib") from exc
    fig = Figure(figsize=(8, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def loss_png(history: dict[str, Any]) -> bytes:
    """The loss per step, its 10-step rolling median, and a marker where each finding fired."""
    fig = _figure()
    ax = fig.add_subplot()
    steps, loss = np.asarray(history["loss_step"]), np.asarray(history["loss"], dtype=np.float64)
    ok = np.isfinite(loss)
    ax.plot(steps[ok], loss[ok], color="0.75", linewidth=0.8, label="batch loss")
    if ok.sum() >= 10:
        smooth = np.convolve(np.where(ok, loss, np.nan), np.ones(10) / 10, mode="valid")
        ax.plot(steps[9:], smooth, color="C0", linewidth=1.5, label="10-step mean")
    for i, event in enumerate(history.get("events", [])):
        ax.axvline(event["step"], color=f"C{1 + i % 8}", linestyle="--", linewidth=1)
        ax.annotate(event["code"], (event["step"], 1.0), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", ha="right", fontsize=7)
    if ok.any() and loss[ok].min() > 0 and loss[ok].max() / loss[ok].min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss and findings")
    ax.legend(loc="upper right", fontsize=8)
    return _png(fig)


def grad_png(history: dict[str, Any]) -> bytes:
    """Gradient L2 norm of each conv/linear weight over the sampled steps (log scale)."""
    fig = _figure()
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
        ax.plot(np.asarray(history["grad_step"])[ok], g[ok], color=color, linewidth=1,
                label=names[i].rpartition(".")[0] or names[i])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm")
    ax.set_title("Gradient norm by layer (blue: first, red: last)")
    if weights:
        ax.legend(loc="best", fontsize=7, ncol=2)
    return _png(fig)


def save_plots(history: dict[str, Any], directory: Path) -> list[Path]:
    """Write ``loss.png`` and ``grad_norms.png`` into ``directory`` (created) and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, render in (("loss.png", loss_png), ("grad_norms.png", grad_png)):
        path = directory / name
        path.write_bytes(render(history))
        out.append(path)
    return out
