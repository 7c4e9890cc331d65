"""``convdoctor layers``: params and MACs of the ways to build one layer."""

from __future__ import annotations

import json

import click

from ..advice import layer_alternatives
from ..report.layers import layer_options_text
from ._exit import guarded


@click.command("layers")
@click.argument("c_in", type=int)
@click.argument("c_out", type=int)
@click.option("--kernel", type=int, default=3, show_default=True, help="Kernel size k.")
@click.option("--size", type=int, default=28, show_default=True, help="Input height and width.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@guarded
def command(c_in: int, c_out: int, kernel: int, size: int, as_json: bool) -> None:
    """Compare standard, depthwise-separable, strided and pooled layers (and 3x3 stacks for k>=5)."""
    options = layer_alternatives(c_in, c_out, kernel, size)
    if as_json:
        click.echo(json.dumps([o.to_dict() for o in options], indent=2))
        return
    title = f"{c_in}->{c_out} channels, {kernel}x{kernel}, {size}x{size} input"
    click.echo(layer_options_text(options, title), nl=False)
