"""``convdoctor rf``."""

from __future__ import annotations

from pathlib import Path

import click

from ..capture.choices import RFMethod
from ..report.files import write_report
from ._exit import guarded
from ._options import EnumChoice, emit, input_option, output_options, report_file_option, trust_option, weights_option


@click.command("rf")
@click.argument("model")
@input_option
@weights_option
@trust_option
@click.option("--layer", default=None, help="Module path the findings are about (default: last feature layer).")
@click.option("--object-size", default=None, metavar="PX", help="Object size in input pixels (64 or 64x32).")
@click.option(
    "--method",
    type=EnumChoice(RFMethod, "method"),
    default=RFMethod.ANALYTIC.value,
    show_default=True,
    help="analytic: every layer from the graph; gradient: autograd check of one layer.",
)
@report_file_option("--plot", "plot_file", help_text="Write a PNG of field size by depth to FILE.")
@click.option("--depth", type=click.IntRange(1, 20), default=2, show_default=True, help="Module depth of the table.")
@output_options
@guarded
def command(
    model: str,
    input_size: str | tuple[str, ...] | None,
    weights: Path | None,
    trusted: bool,
    layer: str | None,
    object_size: str | None,
    method: str,
    plot_file: Path | None,
    depth: int,
    as_json: bool,
    html_file: Path | None,
    force: bool,
    fail_on: str,
    width: int | None,
) -> None:
    """Receptive field (size, jump, start) of every layer, in input pixels."""
    from ..report.rf_plot import rf_depth_plot
    from ..rf import receptive_field

    report = receptive_field(
        model, input_size, method=method, layer=layer, object_size=object_size, weights=weights, trusted=trusted
    )
    if plot_file is not None:
        write_report(plot_file, rf_depth_plot(report), force=force)
    emit(report, as_json=as_json, html_file=html_file, force=force, fail_on=fail_on, width=width, depth=depth)
