"""``convdoctor layers``: params and MACs of the ways to build one layer."""

from __future__ import annotations

import json

import click
from rich.table import Table

from ..advice import layer_alternatives
from ..report.terminal import to_text
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
    table = Table(title=f"{c_in}->{c_out} channels, {kernel}x{kernel}, {size}x{size} input")
    for col in ("layer", "params", "MACs", "output", "note"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for o in options:
        table.add_row(o.name, f"{o.params:,}", f"{o.macs:,}", "x".join(map(str, o.output_shape)), o.note)
    click.echo(to_text([table]), nl=False)
