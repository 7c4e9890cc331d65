"""The choices every verb shares (device, dtype, model mode) and the one batch-size parser.

These are the single definition behind the Python API and the CLI: the CLI builds its
``click.Choice`` lists from the enums, and ``tests/cli/test_choices.py`` checks that every
member maps to something real (a torch device type, a ``torch.dtype``). The module imports
no torch at import time, so the CLI can build its options without loading torch.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    import torch


class Choice(str, enum.Enum):
    """A string enum (``enum.StrEnum`` needs Python 3.11): members compare and print as their value."""

    def __str__(self) -> str:
        return str(self.value)


@enum.unique
class Device(Choice):
    """Where a verb runs the model (``cuda:N`` picks one GPU)."""

    CPU = "cpu"
    CUDA = "cuda"


@enum.unique
class Dtype(Choice):
    """Floating dtype of weights and inputs."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT64 = "float64"

    @property
    def torch(self) -> torch.dtype:
        """The ``torch.dtype``."""
        import torch

        return getattr(torch, self.value)  # type: ignore[no-any-return]


@enum.unique
class ModelMode(Choice):
    """Which train/eval flags a verb that runs the model serves it with.

    ``as-is`` keeps the flags the model comes with; ``eval`` calls ``eval()`` on convdoctor's
    own copy; ``auto`` is ``eval`` for a model a factory just built (training mode by
    construction, so its flags say nothing about how it is served) and ``as-is`` otherwise
    (a module the caller passes, a TorchScript ``.pt`` or exported ``.pt2`` file).
    """

    AUTO = "auto"
    AS_IS = "as-is"
    EVAL = "eval"


@enum.unique
class Mode(Choice):
    """Which forward ``inspect`` analyses: inference (``eval``) or training (``train``)."""

    EVAL = "eval"
    TRAIN = "train"


@enum.unique
class RFMethod(Choice):
    """How the receptive field is obtained: rules over the graph, or autograd on a positive copy."""

    ANALYTIC = "analytic"
    GRADIENT = "gradient"


def either(enum_type: type[Choice]) -> str:
    """``"a, b or c"``: the valid values, for messages."""
    values = [m.value for m in enum_type]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def _choice(enum_type: type[Choice], value: Any, what: str) -> Any:
    text = str(value).removeprefix("torch.").strip().lower()
    try:
        return enum_type(text)
    except ValueError:
        raise UsageError(f"unsupported {what} {str(value)!r}: choose {either(enum_type)}") from None


def parse_dtype(value: Any) -> Dtype:
    """A dtype name, ``torch.dtype`` or :class:`Dtype` -> :class:`Dtype`.

    Raises:
        UsageError: a dtype convdoctor does not run (the message lists the valid ones).
    """
    return _choice(Dtype, value, "dtype")  # type: ignore[no-any-return]


def parse_mode(value: Any) -> ModelMode:
    """``"auto"``, ``"as-is"`` or ``"eval"`` -> :class:`ModelMode`.

    Raises:
        UsageError: another value (the message lists the valid ones).
    """
    return _choice(ModelMode, str(value).replace("_", "-"), "mode")  # type: ignore[no-any-return]


def parse_device(value: Any) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``, checked against this machine.

    Raises:
        UsageError: unknown device, or CUDA asked for without a usable GPU.
    """
    import torch

    text = str(value).strip().lower()
    try:
        dev = torch.device(text)
        Device(dev.type)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"unknown device {str(value)!r}: choose {either(Device)} (cuda:N for one GPU)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {text!r} asked for but no CUDA GPU is available here "
                "(CUDA is not available on this machine); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {text!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
    return text


def parse_batch_sizes(value: int | str | Sequence[Any]) -> tuple[int, ...]:
    """``"1,8,32"``, ``8`` or ``(1, 8)`` -> ``(1, 8, 32)``: distinct positive sizes, ascending.

    The one parser of batch sizes for every verb (audit, bench, check) and the CLI.

    Raises:
        UsageError: empty, non-integer or non-positive sizes.
    """
    items: Sequence[Any]
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, int):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            items = [value]
    sizes = []
    for item in items:
        is_int = isinstance(item, int) and not isinstance(item, bool)
        if not (is_int or (isinstance(item, str) and item.strip().lstrip("-").isdigit())):
            raise UsageError(
                f"batch size {item!r} is not an integer: batch sizes must be integers, e.g. --batch-sizes 1,8,32"
            )
        size = int(item)
        if size < 1:
            raise UsageError(
                f"batch size {size} is not positive: batch sizes must be integers >= 1, e.g. --batch-sizes 1,8,32"
            )
        sizes.append(size)
    if not sizes:
        raise UsageError("no batch size given: batch sizes must be integers, e.g. --batch-sizes 1,8,32")
    return tuple(sorted(set(sizes)))


def parse_threads(value: int | None) -> int:
    """None -> the current ``torch.get_num_threads()``; otherwise a positive integer.

    Raises:
        UsageError: zero, negative or non-integer.
    """
    if value is None:
        import torch

        return torch.get_num_threads()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        cores = os.cpu_count() or 1
        raise UsageError(f"threads must be a positive integer, got {value!r}; this machine has {cores} core(s)")
    return value
