"""PNG charts of a report (matplotlib's Agg canvas, imported only when a chart is drawn)."""

from __future__ import annotations

import io
from typing import Any

from .. import __version__
from ..results.bench import BenchReport

#: The PNG ``Software`` text of every chart we draw: how a later run knows the file is ours.
PNG_SOFTWARE = f"convdoctor {__version__}"


def new_figure(width: float, height: float, dpi: int, what: str) -> Any:
    """A bare matplotlib ``Figure`` (Agg canvas; pyplot's global backend is never touched).

    Raises:
        ImportError: matplotlib is not installed (the message names ``what`` and the install).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"the {what} needs matplotlib: pip install matplotlib") from exc
    return Figure(figsize=(width, height), dpi=dpi)


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes, signed ``Software: convdoctor ...`` (what :mod:`.files` recognises)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": PNG_SOFTWARE})
    return buf.getvalue()


def latency_plot(report: BenchReport, *, dpi: int = 110) -> bytes:
    """Latency against batch size, one line per model: p50 with a p90-p99 band.

    Args:
        report: a bench report.
        dpi: resolution.

    Returns:
        The PNG file's bytes.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    fig = new_figure(6.4, 4.2, dpi, "latency plot")
    ax = fig.add_subplot()
    for model in report.models:
        rows = sorted((r for r in report.rows if r.model == model), key=lambda r: r.batch_size)
        sizes = [r.batch_size for r in rows]
        (line,) = ax.plot(sizes, [r.p50_ms for r in rows], marker="o", label=f"{model} p50")
        ax.fill_between(
            sizes,
            [r.p90_ms for r in rows],
            [r.p99_ms for r in rows],
            color=line.get_color(),
            alpha=0.2,
            label=f"{model} p90-p99",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per call (ms)")
    first = report.rows[0] if report.rows else None
    where = f"{first.device}, {first.threads} threads, {first.dtype}" if first else ""
    ax.set_title(f"Latency vs batch size ({where})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)
