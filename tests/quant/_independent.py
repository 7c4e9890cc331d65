"""Measurements made without the code under test: accuracy, file sizes, MACs by forward hooks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` as it is, one forward per 256 samples."""
    with torch.no_grad():
        pred = torch.cat([model(c).argmax(1) for c in torch.split(x, 256)])
    return float((pred == y).float().mean())


def saved_file(model: nn.Module, path: Path) -> dict[str, object]:
    """``torch.save`` the state_dict to ``path`` (mkldnn tensors made dense) and load it back safely."""
    state = {
        k: v.to_dense() if isinstance(v, torch.Tensor) and v.is_mkldnn else v for k, v in model.state_dict().items()
    }
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def file_bytes(path: Path) -> int:
    """Size on disk."""
    return os.path.getsize(path)


def weight_elements(model: nn.Module) -> int:
    """Elements of every Conv2d and Linear weight."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def hooked_macs(model: nn.Module, x: torch.Tensor, types: tuple[type[nn.Module], ...]) -> int:
    """MACs of the modules of ``types``, from real output shapes recorded by forward hooks.

    Conv2d: output elements * in_channels / groups * kh * kw. Linear: output elements * in_features.
    """
    total = 0

    def hook(m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, types)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total
