"""Small tensor helpers of the collector: device alignment, norms, row stacking, (un)packing."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

from .._compat import foreach_norm


def same_device(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Move tensors to the first one's device (only model-parallel runs need a move)."""
    if not tensors:
        return []
    dev = tensors[0].device
    return [t if t.device == dev else t.to(dev) for t in tensors]


def total_norm(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The L2 norm over a list of tensors (per-tensor norms in one kernel, then the norm of those)."""
    norms: torch.Tensor = torch.stack([n.float() for n in same_device(foreach_norm(tensors))])
    out: torch.Tensor = torch.linalg.vector_norm(norms)
    return out


def rows(items: Any, width: int) -> np.ndarray:
    """Stack equal-width rows; rows of another width (the model changed) become NaN."""
    if not items:
        return np.zeros((0, width), dtype=np.float64)
    return np.stack([np.asarray(r, dtype=np.float64) if len(r) == width else np.full(width, np.nan) for r in items])


def pack(queue: deque[Any]) -> Any:
    """A deque as a tensor (array rows) or a list (scalars, tuples), for ``torch.save``."""
    items = list(queue)
    if items and isinstance(items[0], np.ndarray):
        return torch.from_numpy(np.stack(items))
    return [list(x) if isinstance(x, tuple) else x for x in items]


def unpack(packed: Any) -> list[Any]:
    """Inverse of :func:`pack`."""
    if isinstance(packed, torch.Tensor):
        return list(packed.numpy())
    return [tuple(x) if isinstance(x, list) else x for x in packed]
