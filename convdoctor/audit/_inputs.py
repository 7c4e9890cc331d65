"""What audit runs the model on, from every input form (normalised once, before any check).

The checks slice one batched tensor (``ctx.take(n)``) and call ``ctx.forward(x)``. A model
called another way (keyword arguments, several positional arguments, a detector's list of
images) gets a ``call`` that puts the slice where it belongs; the other arguments stay as
the caller gave them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..capture.inputs import (
    DEFAULT_INPUT_SIZE,
    InputForm,
    ModelInput,
    normalize_input,
    parse_input_spec,
)
from ..errors import UsageError
from .data import load_data

#: Puts a batch slice into the model's call: ``x -> (args, kwargs)``.
Call = Callable[[torch.Tensor], tuple[tuple[Any, ...], dict[str, Any]]]


@dataclass(frozen=True)
class AuditInputs:
    """The audit's inputs, normalised.

    Attributes:
        sample: the batched inputs ``(N, ...)`` (images stacked), or None for synthetic ones.
        targets: labels of ``sample``, or None.
        input_size: the shape synthetic inputs take, or the one ``sample`` is checked against.
        call: how a slice becomes the model's arguments; None for a plain ``model(x)``.
        form: the form the caller used.
    """

    sample: torch.Tensor | None
    targets: torch.Tensor | None
    input_size: tuple[int, ...] | None
    call: Call | None
    form: InputForm


def _call_of(model_input: ModelInput) -> Call | None:
    return None if model_input.form in (InputForm.SIZE, InputForm.TENSOR) else model_input.bind


def audit_inputs(
    *,
    sample: Any,
    example_input: Any,
    input_size: Any,
    targets: Any,
    data: str | os.PathLike[str] | None,
    limit: int,
    default_size: Sequence[int] | None,
    images: bool,
) -> AuditInputs:
    """Normalise the sample (any example form), a data file, or a size into what the checks run on.

    Raises:
        UsageError: two sources given at once, a form audit cannot batch, unreadable data.
    """
    if sample is not None and example_input is not None:
        raise UsageError("give sample or example_input, not both (they are the same thing)")
    given = sample if sample is not None else example_input
    if data is not None:
        if given is not None or targets is not None:
            raise UsageError("give data or a sample (with its targets), not both")
        size = parse_input_spec(input_size)
        folder = size or (tuple(default_size) if default_size and Path(data).is_dir() else None)
        found = load_data(Path(data), input_size=folder, limit=limit)
        return AuditInputs(found.x, found.y, None, None, InputForm.TENSOR)
    if given is None:
        call = normalize_input(input_size, None, default_size=default_size or DEFAULT_INPUT_SIZE, images=images)
        call.batched(require_one="audit")
        return AuditInputs(None, targets, call.primary_shape, _call_of(call), call.form)
    check = parse_input_spec(input_size) if input_size is not None else None
    call = normalize_input(None, given, images=images)
    return AuditInputs(call.batched(require_one="audit"), targets, check, _call_of(call), call.form)
