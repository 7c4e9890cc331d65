"""``convdoctor check``: every verb on one model, one report, CI exit codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from ..audit import load_data
from ..capture.inputs import parse_input_spec
from ..check_api import check
from ..errors import UsageError
from ._exit import guarded
from ._options import emit, input_option, output_options


@click.command("check")
@click.argument("model")
@input_option
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="state_dict checkpoint (weights_only).")
@click.option("--data", type=click.Path(path_type=Path), help="ImageFolder directory, .npz (x[, y]) or .pt tensors.")
@click.option("--object-size", default=None, help="Object size in pixels (e.g. 64 or 64x32) for the RF findings.")
@click.option("--batch-sizes", default="1,8", show_default=True, help="Batch sizes for audit and bench.")
@click.option("--no-bench", is_flag=True, help="Skip the short latency measurement.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--monitor", "monitor_json", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A Monitor JSON (mon.to_json()) whose training curves join the report.")
@output_options
@guarded
def command(model: str, input_size: str | None, weights: Path | None, data: Path | None, object_size: str | None,
            batch_sizes: str, no_bench: bool, device: str, monitor_json: Path | None, as_json: bool,
            html_file: Path | None, fail_on: str, width: int | None) -> None:
    """inspect + rf + audit (+ bench): exit 1 on an error finding (--fail-on widens it), 2 on bad input."""
    try:
        sizes = tuple(int(b) for b in batch_sizes.split(","))
    except ValueError:
        raise UsageError(f"bad --batch-sizes {batch_sizes!r}: use e.g. 1,8") from None
    sample = targets = None
    if data is not None:
        found = load_data(data, input_size=parse_input_spec(input_size))
        sample, targets = found.x, found.y
    report = check(model, input_size, sample=sample, targets=targets, object_size=object_size, batch_sizes=sizes,
                   bench=not no_bench, device=device, weights=str(weights) if weights else None)
    if monitor_json is not None:
        from ..monitor import report_from_json

        report = dataclasses.replace(report, parts={**report.parts, "monitor": report_from_json(
            json.loads(monitor_json.read_text(encoding="utf-8")))})
    emit(report, as_json=as_json, html_file=html_file, fail_on=fail_on, width=width)
