"""``convdoctor audit``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..audit import audit, list_checks, load_data
from ..capture.inputs import parse_input_spec
from ..capture.load import load_model, load_weights
from ._exit import guarded
from ._options import emit, input_option, output_options, progress_bar



@click.command("audit")
@click.argument("model")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="state_dict checkpoint (weights_only).")
@click.option("--data", type=click.Path(path_type=Path), help="ImageFolder directory, .npz (x[, y]) or .pt tensors.")
@input_option
@click.option("--batch-sizes", default="1,8,32", show_default=True, help="Batch sizes to serve at, comma-separated.")
@click.option("--checks", default=None, help=f"Comma-separated subset of: {', '.join(list_checks())}.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--mode", type=click.Choice(["auto", "as-is", "eval"]), default="auto", show_default=True,
              help="as-is: the flags the model loads with; eval: after model.eval(); auto: eval for a model a "
                   "factory just built (training mode by construction), as-is for .pt/.pt2 files.")
@click.option("--limit", type=click.IntRange(min=1), default=256, show_default=True, help="Samples kept from --data.")
@output_options
@guarded
def command(model: str, weights: Path | None, data: Path | None, input_size: str | None, batch_sizes: str,
            checks: str | None, device: str, mode: str, limit: int, as_json: bool, html_file: Path | None, fail_on: str,
            width: int | None) -> None:
    """Will this checkpoint behave the same in production? Modes, batch dependence, export parity."""
    loaded = load_model(model)
    if weights is not None:
        loaded = load_weights(loaded, weights)
    if mode == "eval" or (mode == "auto" and loaded.fresh):
        loaded.module.eval()  # our own freshly loaded copy, not a caller's model
    size = parse_input_spec(input_size)
    sample = targets = None
    if data is not None:
        folder_size = size or (loaded.default_input_size if data.is_dir() else None)
        found = load_data(data, input_size=folder_size, limit=limit)
        sample, targets = found.x, found.y
    size = None if sample is not None else size or loaded.default_input_size
    with progress_bar("audit") as progress:
        report = audit(loaded.module, sample, input_size=size, targets=targets,
                       batch_sizes=batch_sizes, checks=checks, device=device, progress=progress)
    emit(dataclasses.replace(report, model=model), as_json=as_json, html_file=html_file, fail_on=fail_on, width=width)
