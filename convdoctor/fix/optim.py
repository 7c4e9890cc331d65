"""Optimizer-side remedies: discriminative learning rates, gradient accumulation, and the
learning-rate and clipping values the monitor's findings suggest.

Answers ``LR_MISMATCH`` (:func:`param_groups`, :func:`suggest_lr`), ``LOSS_DIVERGING`` and
``LOSS_OSCILLATING`` (:func:`suggest_lr`, :class:`GradAccumulator` when small batches make
the gradient noisy), ``EXPLODING_GRADIENT`` and ``NAN_LOSS`` (:func:`suggest_clip_norm`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UsageError

#: The update-to-weight ratio a healthy SGD/Adam step makes, per step (the "about 1e-3"
#: rule of thumb of Karpathy's CS231n notes, "ratio of weights:updates"): far above and the
#: weights cannot settle, far below and the group barely learns.
TARGET_UPDATE_RATIO = 1e-3
#: Learning-rate cut for a run whose loss diverges: one decade, the usual grid step.
DIVERGING_LR_CUT = 10.0
#: Learning-rate cut for an oscillating loss: half a decade (~3.16x).
OSCILLATING_LR_CUT = math.sqrt(10.0)


def param_groups(
    model: nn.Module, head: nn.Module | str, lr: float, head_lr_mult: float = 10.0, **group_options: Any
) -> list[dict[str, Any]]:
    """Two optimizer parameter groups: the backbone at ``lr`` and the head at ``lr * head_lr_mult``.

    Answers ``LR_MISMATCH``: a freshly initialised head needs larger steps than a pretrained
    backbone (discriminative fine-tuning, Howard & Ruder 2018). Frozen parameters
    (``requires_grad=False``) are left out, so the optimizer never holds them.

    Args:
        model: the whole model.
        head: the head submodule, or its module path in ``model`` (e.g. ``"fc"``).
        lr: the backbone's learning rate.
        head_lr_mult: the head's learning rate as a multiple of ``lr``.
        **group_options: extra keys for both groups (e.g. ``weight_decay=1e-4``).

    Returns:
        ``[{"name": "backbone", "params": [...], "lr": lr}, {"name": "head", ...}]`` for
        ``torch.optim.SGD(param_groups(...), momentum=0.9)``; a group with no trainable
        parameter is omitted.

    Raises:
        UsageError: the head is not part of the model, or nothing is trainable.
    """
    if isinstance(head, str):
        try:
            head = model.get_submodule(head)
        except AttributeError as exc:
            raise UsageError(f"no submodule {head!r} in the model; pass the head module or its path") from exc
    if lr <= 0 or head_lr_mult <= 0:
        raise UsageError(f"lr and head_lr_mult must be positive, got lr={lr}, head_lr_mult={head_lr_mult}")
    head_ids = {id(p) for p in head.parameters()}
    if not head_ids or not head_ids <= {id(p) for p in model.parameters()}:
        raise UsageError("the head's parameters are not parameters of the model; pass a submodule of the model")
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"name": "backbone", "params": [p for p in trainable if id(p) not in head_ids], "lr": lr, **group_options},
        {
            "name": "head",
            "params": [p for p in trainable if id(p) in head_ids],
            "lr": lr * head_lr_mult,
            **group_options,
        },
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise UsageError("the model has no trainable parameter (every requires_grad is False)")
    return groups


def suggest_lr(lr: float, *, update_ratio: float | None = None, cut: float | None = None) -> float:
    """The learning rate to try next, rounded to two significant digits.

    Answers ``LR_MISMATCH`` (scale ``lr`` so the update-to-weight ratio reaches
    :data:`TARGET_UPDATE_RATIO`; for SGD the update is proportional to ``lr``, for Adam
    nearly so), ``LOSS_DIVERGING`` (``cut=DIVERGING_LR_CUT``) and ``LOSS_OSCILLATING``
    (``cut=OSCILLATING_LR_CUT``).

    Args:
        lr: the current learning rate.
        update_ratio: the measured ``||delta w|| / ||w||`` per step.
        cut: divide ``lr`` by this instead.

    Returns:
        The suggested learning rate.
    """
    if update_ratio is not None and update_ratio > 0 and math.isfinite(update_ratio):
        new = lr * TARGET_UPDATE_RATIO / update_ratio
    else:
        new = lr / (cut or DIVERGING_LR_CUT)
    return _round_sig(new)


def suggest_clip_norm(grad_norms: Sequence[float] | Iterable[float], percentile: float = 50.0) -> float:
    """The ``max_norm`` for ``torch.nn.utils.clip_grad_norm_``: a percentile of healthy total norms.

    Answers ``EXPLODING_GRADIENT`` and ``NAN_LOSS``. Clipping at the median of the norms seen
    while training was healthy leaves ordinary steps alone and caps the spikes (AutoClip,
    Seetharaman et al. 2020, clips at a low percentile of the norm history; the median is
    the gentler choice).

    Args:
        grad_norms: total gradient norms from healthy steps (non-finite values are ignored).
        percentile: which percentile to clip at.

    Returns:
        The clipping threshold, two significant digits (1.0 when no finite norm is given).
    """
    finite = [float(g) for g in grad_norms if math.isfinite(float(g)) and float(g) > 0]
    if not finite:
        return 1.0
    finite.sort()
    k = min(len(finite) - 1, max(0, round(percentile / 100.0 * (len(finite) - 1))))
    return _round_sig(finite[k])


class GradAccumulator:
    """Gradient accumulation: ``steps`` small batches make one optimizer step.

    Answers ``LOSS_OSCILLATING`` when memory limits the batch and the gradient is too noisy,
    and complements ``freeze_bn`` for ``BN_SMALL_BATCH`` (accumulation enlarges the batch the
    optimizer sees, not the batch BatchNorm normalises over). Usage::

        acc = GradAccumulator(optimizer, steps=4)
        for x, y in loader:
            out = model(x); loss = criterion(out, y)
            acc.backward(loss)                  # backward of loss / steps
            if acc.ready:
                mon.step(loss=loss, outputs=out, targets=y, optimizer=optimizer)
            acc.step()                          # optimizer.step() + zero_grad() every `steps` calls

    Under DistributedDataParallel, wrap the forward and backward of the first ``steps - 1``
    micro-batches in ``model.no_sync()`` to skip their all-reduce.

    Args:
        optimizer: the optimizer to step.
        steps: micro-batches per optimizer step (>= 1).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, steps: int) -> None:
        if not isinstance(steps, int) or steps < 1:
            raise UsageError(f"GradAccumulator steps must be a positive integer, got {steps!r}")
        self.optimizer = optimizer
        self.steps = steps
        self.count = 0

    @property
    def ready(self) -> bool:
        """True when the accumulated gradient is complete (the next :meth:`step` updates)."""
        return self.count >= self.steps

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss / steps`` so the accumulated gradient is the mean over micro-batches."""
        (loss / self.steps).backward()  # type: ignore[no-untyped-call]
        self.count += 1

    def step(self) -> bool:
        """Step and zero the optimizer once ``steps`` micro-batches were accumulated.

        Returns:
            Whether the optimizer stepped.
        """
        if not self.ready:
            return False
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.count = 0
        return True

    def state_dict(self) -> dict[str, int]:
        """The micro-batch position, for resuming mid-accumulation."""
        return {"steps": self.steps, "count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`."""
        self.steps, self.count = int(state["steps"]), int(state["count"])


def _round_sig(x: float, digits: int = 2) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))
