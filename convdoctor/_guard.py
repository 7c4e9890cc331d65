"""Run a user's model without changing it.

``preserve_model_state`` records each module's ``training`` flag, the hooks dicts, the
thread count and a hash of the state_dict, restores the flags, hooks and threads in
``finally`` and (when ``verify=True``) raises if the state_dict changed anyway: a check
that mutates a model is a convdoctor bug, and we would rather fail loudly than ship it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def state_dict_digest(model: nn.Module) -> str:
    """SHA-256 over every state_dict entry's name, dtype, shape and bytes.

    Meta tensors have no bytes; only their metadata is hashed.
    """
    h = hashlib.sha256()
    for name, t in model.state_dict(keep_vars=True).items():
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r}".encode())
            continue
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:{t.device.type}".encode())
        if t.device.type == "meta" or t.numel() == 0:
            continue
        data = t.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        h.update(data.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def training_flags(model: nn.Module) -> dict[str, bool]:
    """Every module's ``training`` flag, keyed by module path."""
    return {name: m.training for name, m in model.named_modules(remove_duplicate=False)}


class ModelChangedError(RuntimeError):
    """A convdoctor check changed the user's model (a bug in convdoctor)."""


@contextlib.contextmanager
def preserve_model_state(model: nn.Module, *, verify: bool = False) -> Iterator[None]:
    """Restore training flags, hooks and thread count on exit, even after an exception.

    Args:
        model: the user's module.
        verify: also hash the state_dict before and after and raise
            :class:`ModelChangedError` if it differs (costs one pass over the weights).
    """
    modules = list(model.modules())
    flags = [(m, m.training) for m in modules]
    hooks = [(m, {k: dict(getattr(m, k)) for k in _HOOK_DICTS if hasattr(m, k)}) for m in modules]
    threads = torch.get_num_threads()
    grad_enabled = torch.is_grad_enabled()
    before = state_dict_digest(model) if verify else None
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for m, saved in hooks:
            for k, v in saved.items():
                d = getattr(m, k)
                d.clear()
                d.update(v)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_grad_enabled(grad_enabled)
    if verify and state_dict_digest(model) != before:
        raise ModelChangedError("convdoctor changed the model's state_dict; please report this bug")
