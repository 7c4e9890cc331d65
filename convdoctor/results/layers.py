"""``LayerOption``: one row of ``convdoctor layers`` (what :func:`convdoctor.advice.layer_alternatives` returns)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LayerOption:
    """One way to build a layer, with its exact cost at the given input.

    Attributes:
        name: how the layer is built (``standard 3x3``, ``depthwise-separable``...).
        params: its parameters.
        macs: its multiply-accumulates at the given input.
        output_shape: its output shape at that input.
        note: what the option trades.
    """

    name: str
    params: int
    macs: int
    output_shape: tuple[int, ...]
    note: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)
