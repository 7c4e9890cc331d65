"""Input specs ("1x3x224x224") and example inputs (real, meta)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import UsageError

_SPEC = re.compile(r"^\d+(x\d+)*$")

#: Default input when none is given: one ImageNet-sized RGB image.
DEFAULT_INPUT_SIZE: tuple[int, ...] = (1, 3, 224, 224)


def parse_input_spec(spec: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Parse ``"1x3x224x224"`` (or ``"3x224x224"``, meaning batch 1) into a shape tuple.

    A three-part *string* gets a batch of 1 (the CLI convention); a sequence of ints is
    taken literally, so ``(2, 5, 16)`` stays a batch of 2 sequences.

    Args:
        spec: a string like ``1x3x224x224``, a sequence of ints, or None.

    Returns:
        The shape with a batch dimension, or None when spec is None.

    Raises:
        UsageError: malformed spec or non-positive dimension.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        text = spec.strip().lower().replace(",", "x").replace("*", "x").replace(" ", "")
        if not _SPEC.match(text):
            raise UsageError(
                f"malformed input size {spec!r}: expected NxCxHxW like 1x3x224x224 (or CxHxW)"
            )
        dims = tuple(int(d) for d in text.split("x"))
    else:
        try:
            dims = tuple(int(d) for d in spec)
        except (TypeError, ValueError):
            raise UsageError(f"malformed input size {spec!r}: expected a sequence of ints") from None
    if len(dims) < 2:
        raise UsageError(f"input size {spec!r} has {len(dims)} dim(s); give at least CxL, e.g. 3x224x224")
    if any(d <= 0 for d in dims):
        raise UsageError(f"input size {spec!r} has a dimension <= 0; every dimension must be positive")
    if len(dims) == 3 and isinstance(spec, str):
        dims = (1, *dims)
    return dims


def format_shape(shape: Sequence[int]) -> str:
    """``(1, 3, 224, 224)`` -> ``"1x3x224x224"``."""
    return "x".join(str(int(d)) for d in shape)


def make_input(
    shape: Sequence[int], *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, seed: int = 0
) -> torch.Tensor:
    """A reproducible random input of the given shape (meta tensors are allocated empty)."""
    dtype = dtype or torch.get_default_dtype()
    if torch.device(device).type == "meta":
        return torch.empty(tuple(shape), device="meta", dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    return x.to(device=device, dtype=dtype)


def to_meta(value: Any) -> Any:
    """Replace every tensor inside a nested structure with an empty meta tensor of the same meta-data."""
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(to_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: to_meta(v) for k, v in value.items()}
    return value


def as_args(example_input: Any) -> tuple[Any, ...]:
    """A single tensor becomes ``(x,)``; a tuple or list is the positional arguments."""
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input)
    return (example_input,)
