"""Training memory (``inspect --train-memory``): one training step's memory, measured on meta tensors.

:func:`training_memory` adds parameters + gradients + optimizer state + activations saved for
backward, and gives the largest batch that fits a budget and the gradient-accumulation steps
to reach a target batch (the remedy ``convdoctor.fix.GradAccumulator``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from ..capture.inputs import make_input
from ..capture.saved import saved_for_backward_bytes
from ..errors import UsageError
from ..inspect import resolve_inputs, resolve_model

#: optimizer state per trainable parameter element, in multiples of the parameter's bytes.
OPTIMIZER_STATE = {"sgd": 0, "sgd_momentum": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class TrainingMemory:
    """Estimated memory of one training step at ``batch_size``.

    Attributes:
        batch_size: the batch the estimate is for.
        param_bytes: all parameters.
        grad_bytes: gradients of trainable parameters.
        optimizer_bytes: optimizer state (momentum, Adam moments).
        saved_activation_bytes: activations saved for backward at this batch.
        total_bytes: the sum.
        per_sample_bytes: saved activations added by one more sample.
        budget_bytes: the budget asked about (None if none).
        max_batch: the largest batch whose estimate fits the budget (None without a budget).
        target_batch: the batch the user wants (None if none).
        accumulation_steps: micro-batches of ``max_batch`` to reach ``target_batch``.
    """

    batch_size: int
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    saved_activation_bytes: int
    total_bytes: int
    per_sample_bytes: int
    budget_bytes: int | None = None
    max_batch: int | None = None
    target_batch: int | None = None
    accumulation_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def training_memory(
    model: nn.Module | str,
    input_size: str | Sequence[int] | None = None,
    *,
    optimizer: str = "sgd_momentum",
    budget_bytes: int | None = None,
    target_batch: int | None = None,
    trusted: bool = False,
) -> TrainingMemory:
    """Memory of one training step: params + grads + optimizer state + saved activations.

    Args:
        model: a module or MODEL spec.
        input_size: input with its batch, e.g. ``(32, 3, 224, 224)``.
        optimizer: one of ``OPTIMIZER_STATE`` (state kept per parameter).
        budget_bytes: memory available; gives ``max_batch``.
        target_batch: the batch you want; gives ``accumulation_steps`` of ``max_batch``.
        trusted: a ``.pt``/``.pt2`` MODEL file you trust: loaded without vetting (it may run
            code; see :mod:`convdoctor.capture.archive`).

    Returns:
        The estimate. Transient buffers of backward kernels are not included.

    Raises:
        UsageError: unknown optimizer, or a budget smaller than the fixed part.
    """
    if optimizer not in OPTIMIZER_STATE:
        raise UsageError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_STATE)}")
    loaded = resolve_model(model, trusted=trusted)
    args, shapes = resolve_inputs(loaded, input_size, None)
    batch = shapes[0][0]
    params = [p for p in {id(p): p for p in loaded.module.parameters()}.values()]
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    grad_bytes = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    opt_bytes = OPTIMIZER_STATE[optimizer] * grad_bytes
    saved = saved_for_backward_bytes(loaded.module, args)
    doubled = saved_for_backward_bytes(loaded.module, (make_input((2 * batch, *shapes[0][1:]), device="meta"),))
    per_sample = max((doubled - saved) // batch, 1)
    fixed = param_bytes + grad_bytes + opt_bytes
    max_batch = steps = None
    if budget_bytes is not None:
        act_fixed = max(saved - per_sample * batch, 0)
        if budget_bytes < fixed + act_fixed + per_sample:
            raise UsageError(
                f"a budget of {budget_bytes:,} bytes does not fit even batch 1 "
                f"(parameters, gradients and optimizer state alone take {fixed:,})"
            )
        max_batch = (budget_bytes - fixed - act_fixed) // per_sample
        if target_batch is not None:
            steps = math.ceil(target_batch / max_batch)
    return TrainingMemory(
        batch,
        param_bytes,
        grad_bytes,
        opt_bytes,
        saved,
        fixed + saved,
        per_sample,
        budget_bytes,
        max_batch,
        target_batch,
        steps,
    )
