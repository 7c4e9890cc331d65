"""Terminal table of ``convdoctor layers``: the ways to build one layer, side by side."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from ..results.layers import LayerOption
from .terminal import to_text

_COLUMNS = ("layer", "params", "MACs", "output", "note")
_NUMERIC = ("params", "MACs")


def layer_options_text(options: Sequence[LayerOption], title: str) -> str:
    """The options as one rich table rendered to text (no colour)."""
    table = Table(title=title)
    for col in _COLUMNS:
        table.add_column(col, justify="right" if col in _NUMERIC else "left")
    for o in options:
        table.add_row(o.name, f"{o.params:,}", f"{o.macs:,}", "x".join(map(str, o.output_shape)), o.note)
    return to_text([table])
