"""``convdoctor demo``: the main job on an embedded default, no arguments, no downloads."""

from __future__ import annotations

import time

import click

from ..api import inspect
from ..demo.digits import DIGITS_SHAPE, load_digits_split, train_digits
from ..report import render
from ._exit import guarded


@click.command("demo")
@click.option("--width", type=int, default=120, show_default=True, help="Terminal width for tables.")
@guarded
def command(width: int) -> None:
    """Train a small BatchNorm CNN on scikit-learn's digits, then diagnose it."""
    click.echo("convdoctor demo: a small BatchNorm CNN on scikit-learn's 8x8 digits (no downloads)\n")
    split = load_digits_split()
    start = time.perf_counter()
    trained = train_digits(split)
    click.echo(f"1. Design and training: trained {len(split.y_train)} digits for 8 epochs in "
               f"{time.perf_counter() - start:.1f} s; test accuracy {100 * trained.test_accuracy:.1f}% "
               f"on {len(split.y_test)} held-out digits.\n")
    report = inspect(trained.model, (1, *DIGITS_SHAPE))
    click.echo(render(report, width=width, depth=3), nl=False)
