"""``convdoctor inspect``."""

from __future__ import annotations

from pathlib import Path

import click

from ..capture.choices import Mode
from ._exit import guarded
from ._options import (
    EnumChoice,
    dtype_option,
    emit,
    input_option,
    output_options,
    parse_bytes,
    trust_option,
    weights_option,
)

#: The optimizers whose state ``--train-memory`` counts (kept equal to advice.OPTIMIZER_STATE by a test).
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd", "sgd_momentum")


@click.command("inspect")
@click.argument("model")
@input_option
@weights_option
@trust_option
@click.option("--depth", type=click.IntRange(1, 20), default=2, show_default=True, help="Module depth of the table.")
@click.option(
    "--mode",
    type=EnumChoice(Mode, "mode"),
    default=Mode.EVAL.value,
    show_default=True,
    help="Analyse the inference (eval) or the training forward.",
)
@dtype_option(None, "Analyse in this dtype.")
@click.option("--train-memory", is_flag=True, help="Estimate one training step's memory at the input's batch.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd_momentum", show_default=True)
@click.option("--budget", default=None, help="Memory budget (e.g. 8GiB): the largest batch that fits.")
@click.option("--target-batch", type=click.IntRange(1), default=None, help="Batch to reach by accumulation.")
@output_options
@guarded
def command(
    model: str,
    input_size: str | tuple[str, ...] | None,
    weights: Path | None,
    trusted: bool,
    depth: int,
    mode: str,
    dtype: str | None,
    train_memory: bool,
    optimizer: str,
    budget: str | None,
    target_batch: int | None,
    as_json: bool,
    html_file: Path | None,
    force: bool,
    fail_on: str,
    width: int | None,
) -> None:
    """Shapes, parameters, MACs, memory and lints, without running the model."""
    import dataclasses

    from ..advice import training_memory
    from ..inspect import inspect

    report = inspect(model, input_size, mode=mode, dtype=dtype, weights=weights, trusted=trusted)
    if train_memory or budget or target_batch:  # memory depends on shapes only, not on the weights' values
        tm = training_memory(
            model,
            report.input_shapes[0],
            optimizer=optimizer,
            budget_bytes=parse_bytes(budget),
            target_batch=target_batch,
            trusted=trusted,
        )
        report = dataclasses.replace(report, training_memory=tm.to_dict())
    emit(report, as_json=as_json, html_file=html_file, force=force, fail_on=fail_on, width=width, depth=depth)
