"""Architecture advice with exact numbers from captured graphs.

* :func:`layer_alternatives` builds each candidate layer (standard, depthwise-separable,
  strided, conv + pooling, stacked 3x3) as a real module and inspects it, so every
  figure is what ``inspect`` would report for that layer in a model.
* :func:`training_memory` estimates one training step's memory: parameters + gradients
  + optimizer state + activations saved for backward (measured on meta tensors), the
  largest batch that fits a budget, and the gradient-accumulation steps to reach a target
  batch (the remedy ``convdoctor.fix.GradAccumulator``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from .api import inspect, resolve_inputs, resolve_model
from .capture.inputs import make_input
from .capture.saved import saved_for_backward_bytes
from .errors import UsageError
from .results.layers import LayerOption


def _option(name: str, module: nn.Module, shape: tuple[int, ...], note: str) -> LayerOption:
    report = inspect(module, shape)
    return LayerOption(name, report.totals["params"], report.totals["macs"], report.output_shapes[0], note)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False)


def layer_alternatives(c_in: int, c_out: int, kernel: int = 3, size: int = 28) -> list[LayerOption]:
    """Params and MACs of the usual ways to map ``c_in -> c_out`` channels at ``size x size``.

    Bias-free convolutions (BatchNorm follows in practice), padding ``k // 2``.

    Args:
        c_in: input channels.
        c_out: output channels.
        kernel: kernel size k.
        size: input height and width.

    Returns:
        Standard kxk, depthwise-separable, and for downsampling a strided kxk conv and a kxk
        conv followed by 2x2 max-pooling; for k >= 5 also the stack of 3x3 convs with the same field.

    Raises:
        UsageError: non-positive sizes or channels.
    """
    if min(c_in, c_out, kernel, size) <= 0:
        raise UsageError("channels, kernel and size must be positive")
    shape = (1, c_in, size, size)
    options = [
        _option(f"standard {kernel}x{kernel}", _conv(c_in, c_out, kernel), shape, "full kxk mixing of all channels"),
        _option(
            "depthwise-separable",
            nn.Sequential(_conv(c_in, c_in, kernel, groups=c_in), _conv(c_in, c_out, 1)),
            shape,
            f"{kernel}x{kernel} depthwise then 1x1 pointwise (MobileNet)",
        ),
        _option(
            f"strided {kernel}x{kernel} (stride 2)",
            _conv(c_in, c_out, kernel, stride=2),
            shape,
            "downsamples while it convolves: a quarter of the MACs",
        ),
        _option(
            f"{kernel}x{kernel} + 2x2 max-pool",
            nn.Sequential(_conv(c_in, c_out, kernel), nn.MaxPool2d(2)),
            shape,
            "convolves at full resolution, then downsamples",
        ),
    ]
    if kernel >= 5:
        n = math.ceil((kernel - 1) / 2)
        stack = nn.Sequential(_conv(c_in, c_out, 3), *[_conv(c_out, c_out, 3) for _ in range(n - 1)])
        options.append(
            _option(f"{n} stacked 3x3", stack, shape, f"same {2 * n + 1}-pixel field, {n - 1} more non-linearities")
        )
    return options


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
