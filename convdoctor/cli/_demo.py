"""``convdoctor demo``: the whole story on the embedded digits, no arguments, no downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..demo.story import Story, run_story
from ..findings import Severity
from ..report import Format, render
from ..report.terminal import findings_table, to_text
from ._exit import guarded


def _incident(story: Story) -> Table:
    inc = story.incident
    table = Table(title=f"BatchNorm left in training mode: accuracy on {inc['samples']} test digits")
    for col in ("batch size", "train-mode BN", "eval mode"):
        table.add_column(col, justify="right")
    for row in inc["rows"]:
        acc = row.get("accuracy")
        table.add_row(str(row["batch_size"]), "fails" if acc is None else f"{100 * acc:.1f}%",
                      f"{100 * row['eval_accuracy']:.1f}%")
    return table


def _monitors(story: Story) -> Table:
    table = Table(title="Two training runs under convdoctor.Monitor", show_lines=True)
    table.add_column("run")
    table.add_column("end of run")
    table.add_column("verdict")
    for name, (summary, codes) in story.monitors.items():
        table.add_row(name, summary, Text(", ".join(codes) or "healthy", style="bold red" if codes else "green"))
    return table


def _int8_line(int8: dict[str, Any]) -> str:
    if "skipped" in int8:
        return f"INT8 skipped: {int8['skipped']}"
    lat = int8.get("latency", {})
    speed = "; ".join(f"batch {b}: int8/fp32 latency {v['ratio']:.2f}x" for b, v in lat.items()
                      if isinstance(v, dict) and "ratio" in v)
    return (f"static INT8 (convdoctor.fix.quantize_int8): {int8['size_fp32_bytes']:,} -> {int8['size_int8_bytes']:,} "
            f"bytes on disk ({int8['size_ratio']:.2f}x), accuracy {100 * int8['accuracy_fp32']:.1f}% -> "
            f"{100 * int8['accuracy_int8']:.1f}%, top-1 agreement {100 * int8['top1_agreement']:.1f}%"
            + (f"; {speed}" if speed else ""))


def _bench_line(story: Story) -> str:
    bench = story.report.parts["bench"]
    rows = getattr(bench, "rows", ())
    return "; ".join(f"batch {r.batch_size}: p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
                     f"{r.throughput:,.0f} samples/s ({r.threads} thread)" for r in rows)


@click.command("demo")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("convdoctor-demo.html"), show_default=True, help="Where to write the HTML report.")
@click.option("--width", type=int, default=120, show_default=True, help="Terminal width for tables.")
@guarded
def command(html_file: Path, width: int) -> None:
    """Train, monitor, audit, quantize and bench a small CNN on scikit-learn's digits."""
    click.echo("convdoctor demo: the whole story on scikit-learn's 8x8 digits (no downloads)\n")
    story = run_story(lambda stage: click.echo(f"  ... {stage}", err=True))
    parts = story.report.parts
    out: list[Any] = [
        Text(f"1. Design: DigitsCNN trained in {story.train_seconds:.1f} s, test accuracy "
             f"{100 * story.test_accuracy:.1f}%.", style="bold"),
        *list(_body("inspect", parts["inspect"])),
        Text("2. Training: a healthy run and a sick one (learning rate 50x too high).", style="bold"),
        _monitors(story),
        Text("3. Hand-off: the same trained CNN served with BatchNorm left in training mode.", style="bold"),
        _incident(story),
        findings_table([f for f in parts["audit"].findings if f.severity is Severity.ERROR],
                       title="convdoctor audit catches it"),
        Text("4. INT8: " + _int8_line(story.int8), style="bold"),
        Text("5. Serving: " + _bench_line(story), style="bold"),
    ]
    click.echo(to_text(out, width=width), nl=False)
    html_file.write_text(render(story.report, Format.HTML), encoding="utf-8")
    click.echo(f"\nHTML report (every stage, with plots) written to {html_file.resolve()}")


def _body(kind: str, report: Any) -> Any:
    from ..report.terminal import RENDERERS, _load_renderers

    _load_renderers()
    return RENDERERS[kind](report, depth=1)
