"""``convdoctor audit``."""

from __future__ import annotations

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
    progress_bar,
    trust_option,
    weights_option,
)

#: The check names --help lists without importing torch (a test keeps them equal to audit.list_checks()).
CHECKS = ("modes", "batch", "determinism", "bn_stats", "export", "fusion", "quantization")


@click.command("audit")
@click.argument("model")
@weights_option
@trust_option
@click.option("--data", type=click.Path(path_type=Path), help="ImageFolder directory, .npz (x[, y]) or .pt tensors.")
@input_option
@batch_sizes_option("1,8,32")
@click.option("--checks", default=None, help=f"Comma-separated subset of: {', '.join(CHECKS)} (default all).")
@device_option
@mode_option
@click.option("--limit", type=click.IntRange(min=1), default=256, show_default=True, help="Samples kept from --data.")
@output_options
@guarded
def command(
    model: str,
    weights: Path | None,
    trusted: bool,
    data: Path | None,
    input_size: str | tuple[str, ...] | None,
    batch_sizes: str,
    checks: str | None,
    device: str,
    mode: str,
    limit: int,
    as_json: bool,
    html_file: Path | None,
    force: bool,
    fail_on: str,
    width: int | None,
) -> None:
    """Will this checkpoint behave the same in production? Modes, batch dependence, export parity."""
    from ..audit import audit

    with progress_bar("audit") as progress:
        report = audit(
            model,
            input_size=input_size,
            batch_sizes=batch_sizes,
            checks=checks,
            device=device,
            progress=progress,
            weights=weights,
            mode=mode,
            data=data,
            limit=limit,
            trusted=trusted,
        )
    emit(report, as_json=as_json, html_file=html_file, force=force, fail_on=fail_on, width=width)
