"""``convdoctor check``: every verb on one model, one report, CI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._exit import guarded
from ._options import (
    batch_sizes_option,
    device_option,
    emit,
    input_option,
    mode_option,
    output_options,
    trust_option,
    weights_option,
)


@click.command("check")
@click.argument("model")
@input_option
@weights_option
@trust_option
@click.option("--data", type=click.Path(path_type=Path), help="ImageFolder directory, .npz (x[, y]) or .pt tensors.")
@click.option("--object-size", default=None, help="Object size in pixels (e.g. 64 or 64x32) for the RF findings.")
@batch_sizes_option("1,8")
@click.option("--no-bench", is_flag=True, help="Skip the short latency measurement.")
@device_option
@mode_option
@click.option(
    "--monitor",
    "monitor_json",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A Monitor JSON (mon.to_json()) whose training curves join the report.",
)
@output_options
@guarded
def command(
    model: str,
    input_size: str | tuple[str, ...] | None,
    weights: Path | None,
    trusted: bool,
    data: Path | None,
    object_size: str | None,
    batch_sizes: str,
    no_bench: bool,
    device: str,
    mode: str,
    monitor_json: Path | None,
    as_json: bool,
    html_file: Path | None,
    force: bool,
    fail_on: str,
    width: int | None,
) -> None:
    """inspect + rf + audit (+ bench): exit 1 on an error finding (--fail-on widens it), 2 on bad input."""
    import dataclasses

    from ..check import check

    report = check(
        model,
        input_size,
        object_size=object_size,
        batch_sizes=batch_sizes,
        bench=not no_bench,
        device=device,
        weights=weights,
        mode=mode,
        data=data,
        trusted=trusted,
    )
    if monitor_json is not None:
        from ..monitor import report_from_json

        report = dataclasses.replace(
            report,
            parts={**report.parts, "monitor": report_from_json(json.loads(monitor_json.read_text(encoding="utf-8")))},
        )
    emit(report, as_json=as_json, html_file=html_file, force=force, fail_on=fail_on, width=width)
