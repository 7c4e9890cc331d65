"""Bytes autograd saves for backward, measured on meta tensors.

The model runs its training-mode forward through ``functional_call`` with meta copies of
its parameters (trainable ones requiring grad) inside ``saved_tensors_hooks``: every
tensor autograd packs for backward passes through the hook. Saved tensors are counted by
*storage*, once each (a view and its base, or the same activation saved by two ops, cost
one storage), and parameters are excluded (they exist anyway).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef

from .._guard import preserve_model_state
from ..errors import CaptureError
from .inputs import to_meta

#: ``StorageWeakRef`` with the type it has (torch leaves its constructor unannotated).
_storage_ref: Callable[[torch.UntypedStorage], StorageWeakRef] = StorageWeakRef


def saved_for_backward_bytes(model: nn.Module, args: Sequence[Any]) -> int:
    """Bytes of the activations a training step keeps alive from forward to backward.

    Args:
        model: any module (never changed; BatchNorm running stats update only on meta copies).
        args: example inputs (only shapes and dtypes matter).

    Returns:
        Unique storage bytes saved for backward, parameters excluded.

    Raises:
        CaptureError: the training forward cannot run on meta tensors.
    """
    copies: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for name, t in itertools.chain(
        model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
    ):
        if id(t) not in copies:
            meta = to_meta(t)
            if isinstance(t, nn.Parameter) and t.requires_grad:
                meta.requires_grad_(True)
            copies[id(t)] = meta
        state[name] = copies[id(t)]
    param_storages = {_storage_ref(t.untyped_storage()) for t in copies.values()}
    saved: dict[StorageWeakRef, int] = {}
    keep: list[torch.Tensor] = []  # hold saved tensors so their storages stay distinct while we count

    def pack(t: torch.Tensor) -> torch.Tensor:
        ref = _storage_ref(t.untyped_storage())
        if ref not in param_storages:
            saved[ref] = t.untyped_storage().nbytes()
            keep.append(t)
        return t

    meta_args = tuple(to_meta(a) for a in args)
    try:
        with preserve_model_state(model), torch.enable_grad():
            model.train()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                torch.func.functional_call(model, state, meta_args, tie_weights=True, strict=False)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise CaptureError(
            f"the training forward cannot run on meta tensors: {type(exc).__name__}: {lines[0] if lines else ''}"
        ) from exc
    return sum(saved.values())
