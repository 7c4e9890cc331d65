"""BatchNorm remedies.

:func:`freeze_bn` answers ``FROZEN_BN_UPDATING`` and ``BN_SMALL_BATCH`` (when fine-tuning a
pretrained backbone, whose statistics are better than any a small batch can estimate).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._compat import BatchNormBase, forward_pre_hooks
from ..errors import UsageError


def _keep_eval(module: nn.Module, args: Any) -> None:
    """Forward pre-hook of a frozen BatchNorm: normalise with the running stats, never update them."""
    module.training = False


def freeze_bn(model: nn.Module) -> list[str]:
    """Freeze every BatchNorm layer of ``model``: eval mode and frozen affine parameters.

    Each layer gets a forward pre-hook that puts it back in eval mode before every forward,
    so it stays frozen across ``model.train()`` (which a training loop calls every epoch):
    the running statistics are used and never updated, and the affine parameters get
    ``requires_grad=False``. The state_dict keys and values are unchanged. Calling it twice
    is harmless.

    Answers ``FROZEN_BN_UPDATING`` and, for fine-tuning, ``BN_SMALL_BATCH``.

    Args:
        model: the model or the backbone to freeze (changed in place: that is the remedy).

    Returns:
        The module paths of the BatchNorm layers frozen.

    Raises:
        UsageError: the model has no BatchNorm layer.
    """
    frozen = []
    for name, module in model.named_modules():
        if not isinstance(module, BatchNormBase):
            continue
        if _keep_eval not in forward_pre_hooks(module):
            module.register_forward_pre_hook(_keep_eval, prepend=True)
        module.eval()
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
        frozen.append(name)
    if not frozen:
        raise UsageError("freeze_bn found no BatchNorm layer in the model; nothing to freeze")
    return frozen


def is_bn_frozen(module: nn.Module) -> bool:
    """Whether ``freeze_bn`` froze this BatchNorm layer."""
    return _keep_eval in forward_pre_hooks(module)
