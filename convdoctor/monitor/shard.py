"""What each rank holds of a parameter under FSDP2 (``fully_shard``), and how its statistics add up.

FSDP2 parameters and gradients are ``DTensor``s: each rank holds a shard (``to_local()``), by
default a ``torch.chunk`` of dim 0. A norm cannot be computed from one shard, but a sum of
squares can be summed across ranks: every statistic of a sharded parameter is recorded per
shard as a local norm, squared, weighted by :attr:`Layout.share` and summed across ranks in the
monitor's one all-reduce per sync; the square root of the sum is the global norm on every rank.

* A sharded parameter has ``share`` 1: its shards are disjoint.
* A parameter replicated on ``r`` ranks (a ``Replicate()`` mesh dimension, or a plain tensor in
  a partly sharded model) has ``share`` ``1/r``: its ``r`` identical copies add up to one.

Per-unit (dead-unit) state needs no sum: a unit is alive at a step when its gradient is
non-zero on any rank, so the global "last step alive" is the MAX across ranks of the local one,
each rank writing the units it holds at their global index (:attr:`Layout.unit_offset`).
``Partial`` placements (unreduced values) are not supported: such a parameter is counted as
sharded, which is wrong; FSDP2 leaves parameters and gradients sharded (``Shard(0)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def _dtensor_type() -> Any:
    from torch.distributed.tensor import DTensor

    return DTensor


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (the tensor itself otherwise)."""
    out: torch.Tensor = t.to_local() if hasattr(t, "to_local") and hasattr(t, "placements") else t
    return out


@dataclass(frozen=True)
class Layout:
    """How the parameters of a model are laid out across ranks.

    Attributes:
        sharded: whether any parameter is a DTensor (an FSDP2 model).
        share: parameter name -> the weight of this rank's sum of squares in the cross-rank sum.
        unit_offset: parameter name -> the global index of this rank's first output unit
            (0 when the rank holds every unit; None when the layout is not understood, which
            turns off dead-unit bookkeeping for that parameter).
    """

    sharded: bool = False
    share: dict[str, float] = field(default_factory=dict)
    unit_offset: dict[str, int | None] = field(default_factory=dict)


def layout(params: list[tuple[str, nn.Parameter]], unit_dims: dict[str, int], world: int) -> Layout:
    """The :class:`Layout` of ``params`` (``unit_dims``: the unit dimension of each conv/linear weight)."""
    plain = (torch.Tensor, nn.Parameter)
    if all(type(p) in plain for _, p in params) or not torch.distributed.is_available():
        return Layout(False, {n: 1.0 for n, _ in params}, {n: 0 for n, _ in params})
    dtensor = _dtensor_type()
    share: dict[str, float] = {}
    offset: dict[str, int | None] = {}
    for name, p in params:
        plain_param = not isinstance(p, dtensor)
        share[name] = 1.0 / world if plain_param else _share(p)
        offset[name] = 0 if plain_param else _unit_offset(p, unit_dims.get(name))
    return Layout(True, share, offset)


def _share(p: Any) -> float:
    replicas = 1
    for i, placement in enumerate(p.placements):
        if placement.is_replicate():
            replicas *= p.device_mesh.size(i)
    return 1.0 / replicas


def _unit_offset(p: Any, dim: int | None) -> int | None:
    """Where this rank's units start: FSDP2 shards like ``torch.chunk``, so rank ``k`` of a mesh
    dimension of size ``s`` holds ``ceil(n / s)`` units from ``k * ceil(n / s)``."""
    if dim is None:
        return 0
    on_units = [i for i, pl in enumerate(p.placements) if pl.is_shard() and pl.dim == dim]
    if not on_units:
        return 0
    if len(on_units) > 1:
        return None
    i = on_units[0]
    n, size = int(p.shape[dim]), p.device_mesh.size(i)
    chunk = math.ceil(n / size)
    start = p.device_mesh.get_local_rank(i) * chunk
    held = int(p.to_local().shape[dim])
    return start if held == max(0, min(chunk, n - start)) else None
