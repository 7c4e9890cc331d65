"""Cross-rank reduction for DistributedDataParallel and FSDP2 runs.

What differs between ranks is only what each rank saw of the batch: its loss, its
predicted and target class counts, its correct count. Gradients are already averaged by
DDP's backward and weights are identical, so gradient and weight statistics need no
reduction. The monitor packs the per-step numbers of one sync interval into a single
tensor and reduces it with one ``all_reduce(SUM)``, at step counts every rank reaches
together, so rank 0's verdict is the one a single process would reach on the global batch.

Under FSDP2 (``fully_shard``) each rank holds a shard of every parameter: the sampled gradient
and weight statistics are sums of squares per shard, summed in the same all-reduce (see
:mod:`.shard`), and the dead-unit state takes one MAX all-reduce at the same sync.

The loss is reduced as a batch-weighted mean (``sum(loss_r * batch_r) / sum(batch_r)``),
which is the global-batch loss for criteria with ``reduction="mean"``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UsageError


class Reducer:
    """Sums tensors across the ranks of a process group (or does nothing with one rank)."""

    def __init__(self, group: Any = None, *, enabled: bool = True) -> None:
        self.group = group
        self.enabled = enabled

    @property
    def world_size(self) -> int:
        """Number of ranks whose statistics are summed (1 when disabled)."""
        if not self.enabled:
            return 1
        return int(torch.distributed.get_world_size(self.group))

    @property
    def rank(self) -> int:
        """This process's rank (0 when disabled)."""
        return int(torch.distributed.get_rank(self.group)) if self.enabled else 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce ``tensor`` in place with SUM and return it."""
        if self.enabled and self.world_size > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM, group=self.group)
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce ``tensor`` in place with MAX and return it (FSDP2 dead-unit state, see ``.shard``)."""
        if self.enabled and self.world_size > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX, group=self.group)
        return tensor


def make_reducer(ddp: Any) -> Reducer:
    """Normalise the ``ddp=`` argument of :class:`~convdoctor.monitor.Monitor`.

    Args:
        ddp: ``None`` reduces when ``torch.distributed`` is initialised with more than one
            rank; ``False`` never reduces; ``True`` reduces over the default group (and
            requires it to be initialised); a ``ProcessGroup`` reduces over that group.

    Returns:
        The reducer.

    Raises:
        UsageError: ``ddp=True`` or a process group without an initialised process group.
    """
    dist = torch.distributed
    ready = dist.is_available() and dist.is_initialized()
    if ddp is False:
        return Reducer(enabled=False)
    if ddp is None:
        return Reducer(enabled=bool(ready and dist.get_world_size() > 1))
    if not ready:
        raise UsageError(
            "Monitor(ddp=...) needs torch.distributed.init_process_group() first; "
            "pass ddp=None to reduce only when it is initialised"
        )
    return Reducer(None if ddp is True else ddp, enabled=True)
