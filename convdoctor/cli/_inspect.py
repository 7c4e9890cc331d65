"""``convdoctor inspect``."""

from __future__ import annotations

from pathlib import Path

import click

from ..advice import OPTIMIZER_STATE, training_memory
from ..api import inspect
from ..capture.load import load_model, load_weights
from ._exit import guarded
from ._options import emit, input_option, output_options, parse_bytes

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64"}


@click.command("inspect")
@click.argument("model")
@input_option
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="state_dict checkpoint (weights_only).")
@click.option("--depth", type=click.IntRange(1, 20), default=2, show_default=True, help="Module depth of the table.")
@click.option("--mode", type=click.Choice(["eval", "train"]), default="eval", show_default=True,
              help="Analyse the inference (eval) or the training forward.")
@click.option("--dtype", type=click.Choice(sorted(_DTYPES)), default=None, help="Analyse in this dtype.")
@click.option("--train-memory", is_flag=True, help="Estimate one training step's memory at the input's batch.")
@click.option("--optimizer", type=click.Choice(sorted(OPTIMIZER_STATE)), default="sgd_momentum", show_default=True)
@click.option("--budget", default=None, help="Memory budget (e.g. 8GiB): the largest batch that fits.")
@click.option("--target-batch", type=click.IntRange(1), default=None, help="Batch to reach by accumulation.")
@output_options
@guarded
def command(model: str, input_size: str | None, weights: Path | None, depth: int, mode: str, dtype: str | None,
            train_memory: bool, optimizer: str, budget: str | None, target_batch: int | None,
            as_json: bool, html_file: Path | None, fail_on: str, width: int | None) -> None:
    """Shapes, parameters, MACs, memory and lints, without running the model."""
    import dataclasses

    import torch

    loaded = load_model(model, meta=weights is None)
    if weights is not None:
        loaded = load_weights(loaded, weights)
    report = inspect(loaded, input_size, mode=mode, dtype=getattr(torch, dtype) if dtype else None)
    if train_memory or budget or target_batch:
        tm = training_memory(loaded, report.input_shapes[0], optimizer=optimizer, budget_bytes=parse_bytes(budget),
                             target_batch=target_batch)
        report = dataclasses.replace(report, training_memory=tm.to_dict())
    emit(report, as_json=as_json, html_file=html_file, fail_on=fail_on, width=width, depth=depth)
