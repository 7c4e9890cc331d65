"""The pending records of one sync interval as tensors, ready for the one cross-rank all-reduce."""

from __future__ import annotations

from typing import Any

import torch

from ._tensors import same_device
from .ddp import Reducer


def pack_steps(
    loss: list[torch.Tensor], batch: list[int], counts: list[torch.Tensor | None], width: int
) -> torch.Tensor | None:
    """``(n, 2 + width)`` float64: loss x batch, batch, then the class, target and malformed-target
    counts (zeros where a step had none), or None without steps."""
    if not loss:
        return None
    losses = torch.stack(same_device(loss)).to(torch.float64)
    dev = losses.device
    sizes = torch.tensor(batch, dtype=torch.float64, device=dev)
    blank = torch.zeros(width, dtype=torch.int64, device=dev)
    rows = torch.stack([k.to(dev) if k is not None and k.numel() == width else blank for k in counts])
    return torch.cat([(losses * sizes)[:, None], sizes[:, None], rows.to(torch.float64)], dim=1)


def pack_samples(gn: list[torch.Tensor], wn: list[torch.Tensor], share: list[float] | None) -> torch.Tensor | None:
    """``(m, 2P)`` float64: gradient then weight norms per sampled step; with ``share`` (sharded
    models) their squares weighted by each parameter's share, to be summed across ranks."""
    if not gn:
        return None
    norms = torch.cat([torch.stack(same_device(gn)), torch.stack(same_device(wn))], dim=1).double()
    if share is None:
        return norms
    weights = torch.tensor(share * 2, dtype=torch.float64, device=norms.device)
    return norms * norms * weights


def pack_updates(ratios: list[Any]) -> torch.Tensor | None:
    """``(u, G, 2)``: per update measurement and group, the weighted squares of the update and of
    the weights (None when there are none, or the groups changed within the interval)."""
    if not ratios or len({r.shape for r in ratios}) != 1:
        return None
    return torch.stack(same_device(ratios))


def sum_together(reducer: Reducer, tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Sum ``tensors`` across ranks in one all-reduce (flattened into one buffer); None stays None."""
    present = [t for t in tensors if t is not None]
    if not present:
        return list(tensors)
    dev = present[0].device
    flat = reducer.sum_(torch.cat([t.to(dev).reshape(-1) for t in present]))
    out: list[torch.Tensor | None] = []
    at = 0
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        out.append(flat[at : at + t.numel()].reshape(t.shape))
        at += t.numel()
    return out
