"""Running-stat drift of BatchNorm layers whose parameters are frozen (FROZEN_BN_UPDATING).

The tracker keeps a copy of each frozen layer's running mean and variance (a few floats per
channel) and, at every sync, measures how far they moved and how many updates moved them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._compat import BatchNormBase
from .hooks import is_frozen_bn
from .window import FrozenBN


class FrozenBNTracker:
    """Snapshots of frozen BatchNorm layers' running stats, compared at each sync.

    Args:
        model: the model; its BatchNorm layers frozen now are snapshotted now, the others when
            they become frozen.
    """

    def __init__(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        self._layers: dict[str, tuple[BatchNormBase, nn.Module | None, dict[str, Any]]] = {}
        for name, m in modules.items():
            if isinstance(m, BatchNormBase):
                parent = modules.get(name.rpartition(".")[0]) if name else None
                self._layers[name] = (m, parent, {})
                if is_frozen_bn(m, parent):
                    self._snap(m, self._layers[name][2], 0)

    @staticmethod
    def _snap(bn: BatchNormBase, snap: dict[str, Any], step: int) -> None:
        count = getattr(bn, "num_batches_tracked", None)
        if count is None or bn.running_mean is None or bn.running_var is None:
            return
        snap.update(n=int(count), step=step, mean=bn.running_mean.detach().clone(), var=bn.running_var.detach().clone())

    @torch.no_grad()
    def measure(self, step: int) -> tuple[FrozenBN, ...]:
        """Movement since the last call of the layers frozen now; re-snapshots them at ``step``."""
        out = []
        for name, (bn, parent, snap) in self._layers.items():
            count, mean, var = bn.num_batches_tracked, bn.running_mean, bn.running_var
            if not is_frozen_bn(bn, parent) or count is None or mean is None or var is None:
                snap.clear()
                continue
            now = int(count)
            if snap and now > snap["n"]:
                std0 = (snap["var"] + bn.eps).sqrt()
                mean_shift = float(((mean - snap["mean"]) / std0).pow(2).mean().sqrt())
                ratio = (var + bn.eps) / (snap["var"] + bn.eps)
                var_shift = float(ratio.log().pow(2).mean().sqrt())
                out.append(FrozenBN(name, step - snap["step"], now - snap["n"], mean_shift, var_shift))
            self._snap(bn, snap, step)
        return tuple(out)
