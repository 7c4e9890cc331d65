"""``convdoctor inspect``."""

from __future__ import annotations

from pathlib import Path

import click

from ..api import inspect
from ..capture.load import load_model, load_weights
from ._exit import guarded
from ._options import emit, input_option, output_options

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64"}


@click.command("inspect")
@click.argument("model")
@input_option
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="state_dict checkpoint (weights_only).")
@click.option("--depth", type=click.IntRange(1, 20), default=2, show_default=True, help="Module depth of the table.")
@click.option("--mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="Analyse the inference (eval) or the training forward.")
@click.option("--dtype", type=click.Choice(sorted(_DTYPES)), default=None, help="Analyse in this dtype.")
@output_options
@guarded
def command(model: str, input_size: str | None, weights: Path | None, depth: int, mode: str, dtype: str | None,
            as_json: bool, html_file: Path | None, fail_on: str, width: int | None) -> None:
    """Shapes, parameters, MACs, memory and lints, without running the model."""
    import torch

    loaded = load_model(model, meta=weights is None)
    if weights is not None:
        loaded = load_weights(loaded, weights)
    report = inspect(loaded, input_size, mode=mode, dtype=getattr(torch, dtype) if dtype else None)
    emit(report, as_json=as_json, html_file=html_file, fail_on=fail_on, width=width, depth=depth)
