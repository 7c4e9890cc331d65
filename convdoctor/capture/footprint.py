"""Will a real-tensor run fit? The input's and the first activation's bytes, before allocating.

``audit``, ``bench`` and ``check`` run the model on real tensors; given ``--input
1x3x100000x100000`` they would ask the allocator for 120 GB and die (or swap the machine to a
halt) without a word. :func:`ensure_fits` estimates, on the meta device, the bytes of the
inputs the run will allocate and of the first leaf module's output at the largest batch (a
lower bound of the forward's peak: every later activation adds to it), and refuses, with
both numbers, a run that needs more than the device has free.

Free memory: CUDA from ``torch.cuda.mem_get_info``; the CPU from ``psutil`` when installed,
else ``MemAvailable`` in ``/proc/meminfo`` (Linux: free plus reclaimable page cache), else
``os.sysconf`` free pages (other Unixes; no reclaimable cache, so it errs towards refusing
less). Where none of these answers, nothing is refused.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._guard import preserve_model_state
from ..errors import UsageError
from .inputs import ModelInput, format_shape, tensor_leaves, to_meta

__all__ = ["available_bytes", "ensure_fits", "first_activation_bytes", "meta_call"]

_MEMINFO = Path("/proc/meminfo")


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory free for new tensors on ``device``, in bytes; None when the platform does not say."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    if dev.type != "cpu":
        return None
    try:  # optional, not a dependency of convdoctor (and untyped): looked up by name
        return int(importlib.import_module("psutil").virtual_memory().available)
    except ImportError:
        pass
    with contextlib.suppress(OSError, ValueError):
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, OSError, ValueError):
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    return None


class _Reached(Exception):
    """Raised by the hook on the first leaf module: the rest of the forward is not needed."""


def first_activation_bytes(model: nn.Module, args: Sequence[Any], kwargs: dict[str, Any]) -> int | None:
    """Bytes of the first leaf module's output, from a meta forward of ``model`` (never changed).

    None when the model cannot run on meta tensors that far (the caller counts the input only).
    """
    state: dict[str, torch.Tensor] = {}
    copies: dict[int, torch.Tensor] = {}
    for name, t in itertools.chain(
        model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
    ):
        state[name] = copies.setdefault(id(t), to_meta(t))
    found: list[int] = []

    def hook(_m: nn.Module, _inputs: Any, output: Any) -> None:
        found.append(sum(t.numel() * t.element_size() for t in tensor_leaves(output)))
        raise _Reached

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = []
    try:
        with preserve_model_state(model), torch.no_grad():
            for m in leaves:  # a ScriptModule refuses hooks: then there is no estimate
                handles.append(m.register_forward_hook(hook))
            torch.func.functional_call(model, state, tuple(to_meta(a) for a in args), to_meta(kwargs), strict=False)
    except _Reached:
        pass
    except Exception:  # noqa: BLE001 - a model meta tensors cannot run: the estimate is the input alone
        return None
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def ensure_fits(
    model: nn.Module,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    device: str | torch.device,
    input_bytes: int | None = None,
) -> None:
    """Refuse a run whose input and first activation exceed the free memory of ``device``.

    Args:
        model: the model to run (only its structure is used).
        args: the call at the largest batch, as meta tensors (their shapes are what counts).
        kwargs: its keyword arguments, likewise.
        device: where the run allocates.
        input_bytes: bytes of the inputs the run allocates, when not those of ``args``/``kwargs``
            (audit draws more samples than its largest batch).

    Raises:
        UsageError: the estimate is above the free memory (both numbers in the message).
    """
    leaves = tensor_leaves((tuple(args), kwargs))
    if input_bytes is None:
        input_bytes = sum(t.numel() * t.element_size() for t in leaves)
    free = available_bytes(device)
    if free is None:
        return
    activation = first_activation_bytes(model, args, kwargs) or 0
    needed = input_bytes + activation
    if needed > free:
        shape = format_shape(leaves[0].shape) if leaves else "?"
        parts = f"input {_gb(input_bytes)}" + (f" + first activation {_gb(activation)}" if activation else "")
        raise UsageError(
            f"input {shape} needs about {_gb(needed)} ({parts}) but {torch.device(device).type} has "
            f"{_gb(free)} free: use a smaller --input or --batch-sizes"
        )


def meta_call(call: ModelInput, batch: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``call`` at ``batch`` with its batched input as a meta tensor (nothing is allocated)."""
    base = call.batched()
    return call.bind(torch.empty((batch, *base.shape[1:]), device="meta", dtype=base.dtype))
