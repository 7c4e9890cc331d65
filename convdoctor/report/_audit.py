"""Terminal body of an audit report: what it ran on, one row per check, the incident table."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rich.table import Table
from rich.text import Text

from ..results.audit import AuditReport, CheckRecord, CheckStatus
from ._units import shape
from .html import esc, html_section
from .html import table as html_table
from .terminal import renderer

STATUS_STYLE = {
    CheckStatus.PASS: "green",
    CheckStatus.FAIL: "bold red",
    CheckStatus.SKIPPED: "dim",
    CheckStatus.ERROR: "magenta",
}


def _g(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _modes(e: dict[str, Any]) -> str:
    text = (
        f"{e.get('training_modules', 0)} module(s) in training mode; BatchNorm {e.get('batchnorm_training', 0)}"
        f"/{e.get('batchnorm_total', 0)}, dropout {e.get('dropout_training', 0)}"
    )
    effect = e.get("eval_effect")
    if effect:
        text += f"; eval changes output by {_g(effect['max_rel_diff'])} of scale"
    return text


def _batch(e: dict[str, Any]) -> str:
    runs = e.get("runs") or []
    if not runs:
        return str(e.get("alone_error") or e.get("skipped_comparison", ""))
    worst = max(runs, key=lambda r: float("inf") if "error" in r else r["max_rel_diff"])
    if "error" in worst:
        return f"{worst['run']}: {worst['error']}"
    return (
        f"{e['probes']} probes alone vs {', '.join(r['run'] for r in runs)}: worst {_g(worst['max_rel_diff'])}"
        f" of scale ({worst['run']}), tolerance {_g(e['rtol'])}"
    )


def _determinism(e: dict[str, Any]) -> str:
    return f"{e['samples']} samples twice: {_g(e['max_rel_diff'])} of scale, tolerance {_g(e['rtol'])}"


def _bn_stats(e: dict[str, Any]) -> str:
    return f"{e['layers']} layer(s): {e['never_updated']} never updated, {e['invalid']} invalid"


def _export(e: dict[str, Any]) -> str:
    formats = e.get("formats", {})
    return ", ".join(f"{name} {f.get('status', '?')}" for name, f in formats.items())


def _fusion(e: dict[str, Any]) -> str:
    return f"{e['pairs']} pair(s) folded: {_g(e['max_rel_diff'])} of scale, tolerance {_g(e['rtol'])}"


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "modes": _modes,
    "batch": _batch,
    "determinism": _determinism,
    "bn_stats": _bn_stats,
    "export": _export,
    "fusion": _fusion,
}


def _summary(record: CheckRecord) -> str:
    e = record.evidence
    if record.status is CheckStatus.SKIPPED:
        return str(e.get("reason", ""))
    if record.status is CheckStatus.ERROR:
        return f"check crashed: {e.get('error', '')}"
    fn = SUMMARIES.get(record.name)
    try:
        return fn(e) if fn else ", ".join(f"{k}={_g(v)}" for k, v in e.items() if not isinstance(v, (dict, list)))
    except (KeyError, TypeError, ValueError):  # evidence of an older or custom check: show it raw
        return ", ".join(f"{k}={_g(v)}" for k, v in e.items() if not isinstance(v, (dict, list)))


def checks_table(report: AuditReport) -> Table:
    """One row per check: status, time and the numbers behind it."""
    table = Table(title="Checks", expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("evidence")
    for record in report.checks:
        codes = f" ({', '.join(dict.fromkeys(f.code for f in record.findings))})" if record.findings else ""
        table.add_row(
            record.name,
            Text(record.status.value, style=STATUS_STYLE[record.status]),
            f"{record.seconds:.1f} s",
            _summary(record) + codes,
        )
    return table


def incident_table(incident: dict[str, Any]) -> Table:
    """Accuracy at each batch size in the model's current mode next to eval mode."""
    table = Table(title=f"Accuracy by batch size ({incident['samples']} labelled samples)", expand=False)
    for col in ("batch size", "current mode", "eval mode", "vs eval"):
        table.add_column(col, justify="right")
    for row in incident["rows"]:
        acc, ev = row.get("accuracy"), row["eval_accuracy"]
        if acc is None:
            table.add_row(
                str(row["batch_size"]), Text("fails", style="bold red"), f"{100 * ev:.1f}%", row.get("error", "")
            )
            continue
        style = "bold red" if ev - acc > 0.005 else ""
        table.add_row(
            str(row["batch_size"]),
            Text(f"{100 * acc:.1f}%", style=style),
            f"{100 * ev:.1f}%",
            f"{100 * (acc - ev):+.1f} pt",
        )
    return table


def _input_line(report: AuditReport) -> Text:
    i = report.input
    if not i:
        return Text("")
    what = "random N(0, 1) samples" if i.get("synthetic") else "samples" + (" with labels" if i.get("targets") else "")
    sizes = ", ".join(str(b) for b in i.get("batch_sizes", []))
    return Text(
        f"Ran on {i.get('samples')} {what} of shape {shape(i.get('shape', [])[1:])} on {i.get('device')}; "
        f"batch sizes {sizes}; {report.seconds:.1f} s in checks."
    )


@renderer("audit")
def render_audit(report: AuditReport, **_: Any) -> Iterable[Any]:
    """Input line, checks table, and the accuracy table when labels were given."""
    yield _input_line(report)
    yield checks_table(report)
    if report.incident is not None:
        yield incident_table(report.incident)


@html_section("audit")
def html_audit(report: AuditReport) -> str:
    """The input line, one row per check, and the accuracy-by-batch table when labels were given."""
    rows = [[r.name, r.status.value, f"{r.seconds:.1f} s", _summary(r)] for r in report.checks]
    out = f"<p>{esc(_input_line(report).plain)}</p>" + html_table(["check", "status", "time", "evidence"], rows)
    if report.incident is not None:
        inc = [
            [
                row["batch_size"],
                "fails" if row.get("accuracy") is None else f"{100 * row['accuracy']:.1f}%",
                f"{100 * row['eval_accuracy']:.1f}%",
            ]
            for row in report.incident["rows"]
        ]
        out += "<h3>Accuracy by batch size</h3>" + html_table(
            ["batch size", "current mode", "eval mode"], inc, {0, 1, 2}
        )
    return out
