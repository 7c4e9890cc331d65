"""``convdoctor bench MODEL [MODEL ...]``: warm and cold latency, batch sweep, comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..capture.choices import Dtype
from ._exit import guarded
from ._options import (
    batch_sizes_option,
    device_option,
    dtype_option,
    emit,
    input_option,
    output_options,
    progress_bar,
    report_file_option,
    trust_option,
    weights_option,
)


@click.command("bench")
@click.argument("models", nargs=-1, required=True, metavar="MODEL [MODEL ...]")
@input_option
@batch_sizes_option("1")
@device_option
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: torch's count); always recorded.")
@dtype_option(Dtype.FLOAT32, "Weight and input dtype.")
@weights_option
@trust_option
@click.option("--min-run-time", type=float, default=1.0, show_default=True, help="Seconds of warm samples per row.")
@click.option("--no-cold-start", is_flag=True, help="Skip the fresh-process cold start.")
@report_file_option("--plot", help_text="Write a PNG of latency vs batch size per model to FILE.")
@output_options
@guarded
def command(
    models: tuple[str, ...],
    input_size: str | tuple[str, ...] | None,
    plot: Path | None,
    weights: Path | None,
    no_cold_start: bool,
    as_json: bool,
    html_file: Path | None,
    force: bool,
    fail_on: str,
    width: int | None,
    **kwargs: Any,
) -> None:
    """Latency the way production sees it: warm p50/p90/p99, cold start, throughput, where the time goes."""
    from ..bench import bench, compare
    from ..report.files import write_report
    from ..report.plot import latency_plot

    kwargs["cold_start"] = not no_cold_start
    with progress_bar("bench") as progress:
        if len(models) == 1:
            report = bench(models[0], input_size, weights=weights, progress=progress, **kwargs)
        else:
            report = compare({m: m for m in models}, input_size, weights=weights, progress=progress, **kwargs)
    if plot is not None:
        write_report(plot, latency_plot(report), force=force)
        click.echo(f"latency plot written to {plot}", err=True)
    emit(report, as_json=as_json, html_file=html_file, force=force, fail_on=fail_on, width=width)
