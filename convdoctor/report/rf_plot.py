"""PNG chart of an rf report: field size by depth (matplotlib imported only when drawn)."""

from __future__ import annotations

from ..results.rf import RFReport
from .plot import new_figure, to_png


def rf_depth_plot(report: RFReport, *, dpi: int = 110) -> bytes:
    """Field size of each leaf layer, in execution order, one line per spatial axis.

    The input size (and the object size, when given) are drawn as horizontal lines: a
    field above the input line sees the whole image from its centre; the object line
    is where ``RF_TOO_SMALL`` / ``RF_TOO_LARGE`` draw their thresholds.

    Args:
        report: an rf report (the analytic method lists every layer).
        dpi: resolution.

    Returns:
        The PNG file's bytes.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    rows = [r for r in report.layers if (r.leaf or len(report.layers) == 1) and r.local]
    fig = new_figure(7.0, 4.2, dpi, "receptive-field plot")
    ax = fig.add_subplot()
    axes_names = (
        ("h", "w") if len(report.input_shape) == 4 else tuple(f"axis {i}" for i in range(len(report.input_shape) - 2))
    )
    depth = list(range(1, len(rows) + 1))
    series = [[float(r.size[a]) for r in rows] for a in range(len(axes_names))]  # type: ignore[arg-type]
    same = all(s == series[0] for s in series)
    for a, label in enumerate(axes_names[:1] if same else axes_names):
        name = f"field size ({' = '.join(axes_names)})" if same else f"field size ({label})"
        ax.step(depth, series[a], where="post", label=name)
    for a, n in enumerate(report.input_shape[2:]):
        ax.axhline(
            n, color="grey", linestyle="--", linewidth=1, label=f"input ({axes_names[a]}) = {n}px" if a == 0 else None
        )
    if report.object_size is not None:
        ax.axhline(report.object_size[0], color="tab:red", linestyle=":", label=f"object = {report.object_size[0]}px")
    target = report.focus_layer
    inside = [
        i for i, r in enumerate(rows, 1) if target is not None and target.first_op <= r.first_op <= target.last_op
    ]
    focus = inside[-1] if inside else None
    if focus is not None:
        ax.axvline(focus, color="tab:green", alpha=0.4, label=f"focus: {report.focus or '<model>'}")
    ax.set_xlabel("layer (leaf modules, execution order)")
    ax.set_ylabel("receptive field (input pixels)")
    ax.set_title(f"Receptive field by depth: {report.model}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)
