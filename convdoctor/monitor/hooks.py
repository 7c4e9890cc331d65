"""Forward hooks the monitor installs, and the bookkeeping to remove every one of them.

Two probes, both cheap enough to leave on every step:

* :class:`DepthOrder` records the order in which modules that own parameters run during
  the first forward pass, so "first layer" and "last layer" mean depth, not the order of
  ``__init__``. It removes itself after one forward.
* :class:`BNProbe` records the smallest batch a BatchNorm layer normalised in training mode
  since the last step. It reads ``module.training`` in a *post*-hook, i.e. the mode the
  forward actually used, so a ``freeze_bn`` pre-hook that forces eval mode is respected.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

logger = logging.getLogger(__name__)

#: Layers whose weight has one output unit per slice of dim 0 (dim 1 for transposed convs):
#: the layers whose per-unit gradients tell dead units apart.
UNIT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                                            nn.ConvTranspose2d, nn.ConvTranspose3d)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel / DataParallel / torch.compile wrappers.

    Names are reported without the wrapper's ``module.`` or ``_orig_mod.`` prefix.
    """
    for _ in range(4):  # wrappers nest at most a few deep (compile(DDP(model)))
        inner = model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) \
            else getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
        else:
            break
    return model


def unit_dim(module: nn.Module) -> int:
    """The weight dimension that indexes output units (filters) of a conv or linear layer."""
    return 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0


def is_frozen_bn(bn: nn.Module, parent: nn.Module | None) -> bool:
    """A BatchNorm layer belongs to a frozen part of the model.

    Its affine parameters exist and none requires grad; without affine parameters, the
    module that contains it has parameters and none requires grad.
    """
    own = list(bn.parameters(recurse=False))
    if own:
        return not any(p.requires_grad for p in own)
    if parent is None:
        return False
    around = list(parent.parameters())
    return bool(around) and not any(p.requires_grad for p in around)


class HookSet:
    """RemovableHandle bookkeeping: everything installed is removed by :meth:`remove`."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def add(self, handle: RemovableHandle) -> None:
        """Keep a handle for later removal."""
        self._handles.append(handle)

    def remove(self) -> None:
        """Remove every hook added so far (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __len__(self) -> int:
        return len(self._handles)


class DepthOrder:
    """Module paths in first-forward order, for modules that own parameters directly."""

    def __init__(self, model: nn.Module) -> None:
        self.order: list[str] = []
        self._hooks = HookSet()
        for name, module in model.named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                self._hooks.add(module.register_forward_hook(self._make(name)))

    def _make(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name not in self.order:
                self.order.append(name)

        return hook

    @property
    def captured(self) -> bool:
        """Whether a forward pass ran since the probe was installed."""
        return bool(self.order)

    def remove(self) -> None:
        """Stop recording (called after the first step)."""
        self._hooks.remove()


class BNProbe:
    """The smallest batch any BatchNorm layer normalised in training mode since the last read."""

    def __init__(self, model: nn.Module, world_size: int = 1) -> None:
        self.names: list[str] = []
        self._min_batch: int | None = None
        self._training_layers: set[str] = set()
        self._hooks = HookSet()
        for name, module in model.named_modules():
            if isinstance(module, _BatchNorm):
                # SyncBatchNorm normalises over the batches of every rank together.
                scale = world_size if isinstance(module, nn.SyncBatchNorm) else 1
                self.names.append(name)
                self._hooks.add(module.register_forward_hook(self._make(name, scale)))

    def _make(self, name: str, scale: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not module.training or not args or not isinstance(args[0], torch.Tensor):
                return
            n = int(args[0].shape[0]) * scale
            self._min_batch = n if self._min_batch is None else min(self._min_batch, n)
            self._training_layers.add(name)

        return hook

    def read(self) -> tuple[int | None, int]:
        """Return and reset (smallest batch seen in training mode, number of such layers)."""
        out = (self._min_batch, len(self._training_layers))
        self._min_batch = None
        self._training_layers = set()
        return out

    def remove(self) -> None:
        """Remove the hooks."""
        self._hooks.remove()
