"""What bench times: a model, its name and spec, and its call at each batch size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..capture.inputs import DEFAULT_INPUT_SIZE, ModelInput, make_input
from ..capture.prepare import model_input, prepare_model
from ..errors import UsageError


@dataclass
class Target:
    """A model to bench: the module, its display name, and its spec when it has one."""

    name: str
    module: nn.Module
    call: ModelInput
    spec: str | None = None
    weights: str | None = None
    rebuild: Callable[[], nn.Module] | None = None


def make_target(
    model: nn.Module | str, name: str | None, weights: Any, input_size: Any, example_input: Any, trusted: bool
) -> Target:
    if not isinstance(model, (nn.Module, str)):
        raise UsageError(f"model must be an nn.Module or a MODEL spec string, got {type(model).__name__}")
    loaded = prepare_model(model, weights=weights, trusted=trusted)
    call = model_input(loaded, input_size, example_input, fallback=DEFAULT_INPUT_SIZE)
    call.batched(require_one="bench")  # one batched tensor, images of one size: checked before any timing
    spec = model if isinstance(model, str) else None
    return Target(
        name or loaded.spec, loaded.module, call, spec, None if weights is None else str(weights), loaded.rebuild
    )


def batch_call(
    call: ModelInput, batch_size: int, device: str, dtype: torch.dtype
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The model's arguments at ``batch_size``: a size gives random inputs; an example is cycled
    along its batch (its values and integer dtype kept, floats cast to ``dtype``)."""
    base = call.batched(require_one="bench")
    if base.device.type == "meta":
        x = make_input((batch_size, *base.shape[1:]), device=device, dtype=dtype)
    else:
        x = base[torch.arange(batch_size) % base.shape[0]]
        x = x.to(device=device, dtype=dtype if x.is_floating_point() else x.dtype)
    args, kwargs = call.bind(x)

    def move(v: Any) -> Any:
        return v.to(device) if isinstance(v, torch.Tensor) else v

    return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}
