"""Normalise and validate bench arguments at the boundary, once (STYLE 11)."""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..capture.inputs import parse_input_spec
from ..errors import UsageError


class Device(str, enum.Enum):
    """Where the model runs; shared with the CLI's ``--device`` choices."""

    CPU = "cpu"
    CUDA = "cuda"


class Dtype(str, enum.Enum):
    """Weight and input dtype; shared with the CLI's ``--dtype`` choices."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"

    @property
    def torch(self) -> torch.dtype:
        """The ``torch.dtype``."""
        return getattr(torch, self.value)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class BenchOptions:
    """Validated bench arguments.

    Attributes:
        batch_sizes: distinct positive batch sizes, ascending.
        device: device string (``"cpu"``, ``"cuda"`` or ``"cuda:N"``).
        threads: intra-op threads (the current count when the caller gave none).
        dtype: weight and input dtype.
        warmup: warm-up calls per row.
        min_samples: warm samples per row, at least.
        min_run_time: seconds of warm samples per row, at least.
        max_run_time: seconds after which sampling stops regardless.
        cold_start: measure cold start in a subprocess (MODEL specs only).
        profile: profile per-module time and peak memory.
        probe: measure (or read the cached) machine peaks for the roofline labels.
        top: modules listed per row.
    """

    batch_sizes: tuple[int, ...]
    device: str
    threads: int
    dtype: Dtype
    warmup: int = 10
    min_samples: int = 100
    min_run_time: float = 1.0
    max_run_time: float = 30.0
    cold_start: bool = True
    profile: bool = True
    probe: bool = True
    top: int = 10

    @property
    def device_type(self) -> str:
        """``"cpu"`` or ``"cuda"``."""
        return torch.device(self.device).type

    def method(self) -> dict[str, Any]:
        """How the figures are measured, for the report."""
        return {
            "timer": "torch.utils.benchmark.Timer, one call per sample",
            "clock": "CUDA events, synchronised" if self.device_type == "cuda" else "time.perf_counter",
            "warmup": self.warmup, "min_samples": self.min_samples, "min_run_time_s": self.min_run_time,
            "max_run_time_s": self.max_run_time, "inference_mode": True, "mode": "eval",
            "throughput": "batch_size / p50", "torch": torch.__version__,
        }


def parse_batch_sizes(value: int | str | Sequence[int]) -> tuple[int, ...]:
    """``"1,8,32"``, ``8`` or ``(1, 8)`` -> ``(1, 8, 32)``; every size a positive integer.

    Raises:
        UsageError: empty, non-integer or non-positive sizes.
    """
    items: Sequence[Any]
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, int):
        items = [value]
    else:
        items = list(value)
    sizes = []
    for item in items:
        is_int = isinstance(item, int) and not isinstance(item, bool)
        if not (is_int or (isinstance(item, str) and item.strip().lstrip("-").isdigit())):
            raise UsageError(f"batch size {item!r} is not an integer; give e.g. --batch-sizes 1,8,32")
        size = int(item)
        if size < 1:
            raise UsageError(f"batch size {size} is not positive; give sizes >= 1, e.g. --batch-sizes 1,8,32")
        sizes.append(size)
    if not sizes:
        raise UsageError("no batch size given; give e.g. --batch-sizes 1,8,32")
    return tuple(sorted(set(sizes)))


def parse_device(value: str | torch.device) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``, checked against this machine.

    Raises:
        UsageError: unknown device, or CUDA asked for without a usable GPU.
    """
    text = str(value).strip().lower()
    try:
        dev = torch.device(text)
        Device(dev.type)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {str(value)!r}; choose one of: "
                         f"{', '.join(d.value for d in Device)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("device 'cuda' asked for but no CUDA GPU is available here "
                             "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {text!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
    return text


def parse_dtype(value: str | torch.dtype | Dtype) -> Dtype:
    """A dtype name or ``torch.dtype`` -> :class:`Dtype`.

    Raises:
        UsageError: a dtype convdoctor does not bench.
    """
    text = str(value).removeprefix("torch.").strip().lower()
    try:
        return Dtype(text)
    except ValueError:
        raise UsageError(f"unsupported dtype {str(value)!r}; choose one of: "
                         f"{', '.join(d.value for d in Dtype)}") from None


def parse_threads(value: int | None) -> int:
    """None -> the current ``torch.get_num_threads()``; otherwise a positive integer.

    Raises:
        UsageError: zero, negative or non-integer.
    """
    if value is None:
        return torch.get_num_threads()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        cores = os.cpu_count() or 1
        raise UsageError(f"threads must be a positive integer, got {value!r}; this machine has {cores} core(s)")
    return value


def bench_options(batch_sizes: Any, device: Any, threads: Any, dtype: Any, **kwargs: Any) -> BenchOptions:
    """Validate everything before any model runs.

    Raises:
        UsageError: any invalid argument, with the valid choices.
    """
    for name in ("warmup", "top"):
        if name in kwargs and (not isinstance(kwargs[name], int) or kwargs[name] < 0):
            raise UsageError(f"{name} must be an integer >= 0, got {kwargs[name]!r}")
    if "min_samples" in kwargs and (not isinstance(kwargs["min_samples"], int) or kwargs["min_samples"] < 1):
        raise UsageError(f"min_samples must be an integer >= 1, got {kwargs['min_samples']!r}")
    for name in ("min_run_time", "max_run_time"):
        if name in kwargs and not (isinstance(kwargs[name], (int, float)) and kwargs[name] >= 0):
            raise UsageError(f"{name} must be a number of seconds >= 0, got {kwargs[name]!r}")
    unknown = set(kwargs) - set(BenchOptions.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown bench option(s): {', '.join(sorted(unknown))}")
    return BenchOptions(batch_sizes=parse_batch_sizes(batch_sizes), device=parse_device(device),
                        threads=parse_threads(threads), dtype=parse_dtype(dtype), **kwargs)


def input_shape(input_size: Any, default: tuple[int, ...] | None) -> tuple[int, ...]:
    """The input shape to bench, batch included (the batch is replaced per row).

    Raises:
        UsageError: malformed input size.
    """
    from ..capture.inputs import DEFAULT_INPUT_SIZE

    shape = parse_input_spec(input_size)
    return shape or default or DEFAULT_INPUT_SIZE
