"""User code that leaves by ``sys.exit``/``KeyboardInterrupt`` (``tests.cli.exit_models:NAME`` specs)."""

from __future__ import annotations

import sys

import torch
from torch import nn


def exits() -> nn.Module:
    """A factory that calls ``sys.exit(0)``: a CI gate must not read that as a pass."""
    sys.exit(0)


def interrupted() -> nn.Module:
    """A factory stopped by Ctrl-C."""
    raise KeyboardInterrupt


class _ExitsInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":  # inspect runs on meta; audit runs it for real
            sys.exit(0)
        return self.conv(x)


def exits_in_forward() -> nn.Module:
    """A model whose forward calls ``sys.exit(0)`` on real tensors."""
    return _ExitsInForward()


def stem() -> nn.Module:
    """A wide stride-1 stem: its first activation is 21x its input."""
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU())
