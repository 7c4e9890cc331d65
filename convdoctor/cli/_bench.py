"""``convdoctor bench MODEL [MODEL ...]``: warm and cold latency, batch sweep, comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..bench import bench, compare
from ..report.plot import latency_plot
from ._exit import guarded
from ._options import emit, input_option, output_options, progress_bar



@click.command("bench")
@click.argument("models", nargs=-1, required=True, metavar="MODEL [MODEL ...]")
@input_option
@click.option("--batch-sizes", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,8,32.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: torch's count); always recorded.")
@click.option("--dtype", default="float32", show_default=True, help="float32, float16 or bfloat16.")
@click.option("--weights", default=None, help="State_dict checkpoint for a single MODEL (weights_only=True).")
@click.option("--min-run-time", type=float, default=1.0, show_default=True, help="Seconds of warm samples per row.")
@click.option("--no-cold-start", is_flag=True, help="Skip the fresh-process cold start.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of latency vs batch size per model to FILE.")
@output_options
@guarded
def command(models: tuple[str, ...], input_size: str | None, plot: Path | None, weights: str | None,
            no_cold_start: bool, as_json: bool, html_file: Path | None, fail_on: str, width: int | None,
            **kwargs: Any) -> None:
    """Latency the way production sees it: warm p50/p90/p99, cold start, throughput, where the time goes."""
    kwargs["cold_start"] = not no_cold_start
    with progress_bar("bench") as progress:
        if len(models) == 1:
            report = bench(models[0], input_size, weights=weights, progress=progress, **kwargs)
        else:
            extra = {"weights": weights} if weights else {}
            report = compare({m: m for m in models}, input_size, progress=progress, **extra, **kwargs)
    if plot is not None:
        plot.write_bytes(latency_plot(report))
        click.echo(f"latency plot written to {plot}", err=True)
    emit(report, as_json=as_json, html_file=html_file, fail_on=fail_on, width=width)
