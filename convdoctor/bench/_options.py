"""Normalise and validate bench arguments at the boundary, once (STYLE 11)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..capture.choices import (
    Device,
    Dtype,
    parse_batch_sizes,
    parse_device,
    parse_dtype,
    parse_threads,
)
from ..capture.inputs import DEFAULT_INPUT_SIZE, normalize_input
from ..capture.once import Captures, shared_captures
from ..errors import UsageError

__all__ = [
    "BenchOptions",
    "Device",
    "Dtype",
    "bench_options",
    "parse_batch_sizes",
    "parse_device",
    "parse_dtype",
    "parse_threads",
    "validate_input",
]


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
        trusted: a ``.pt``/``.pt2`` MODEL file is trusted: loaded without vetting (here and
            in the cold-start process; see :mod:`convdoctor.capture.archive`).
        captures: graphs already captured of this one model (``check`` hands over the one
            inspect and rf analysed): a batch whose meta call is among them is costed from
            it, not captured again. Not part of the report.
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
    trusted: bool = False
    captures: Captures | None = None

    @property
    def device_type(self) -> str:
        """``"cpu"`` or ``"cuda"``."""
        return torch.device(self.device).type

    def method(self) -> dict[str, Any]:
        """How the figures are measured, for the report."""
        return {
            "timer": "torch.utils.benchmark.Timer, one call per sample",
            "clock": "CUDA events, synchronised" if self.device_type == "cuda" else "time.perf_counter",
            "warmup": self.warmup,
            "min_samples": self.min_samples,
            "min_run_time_s": self.min_run_time,
            "max_run_time_s": self.max_run_time,
            "inference_mode": True,
            "mode": "eval",
            "throughput": "batch_size / p50",
            "torch": torch.__version__,
        }


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
    shared_captures(kwargs.get("captures"))
    unknown = set(kwargs) - set(BenchOptions.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown bench option(s): {', '.join(sorted(unknown))}")
    return BenchOptions(
        batch_sizes=parse_batch_sizes(batch_sizes),
        device=parse_device(device),
        threads=parse_threads(threads),
        dtype=parse_dtype(dtype),
        **kwargs,
    )


def validate_input(input_size: Any, example_input: Any) -> None:
    """Check the input's form before any model is loaded (the model then picks its default).

    Raises:
        UsageError: both given, or a malformed form.
    """
    normalize_input(input_size, example_input, default_size=DEFAULT_INPUT_SIZE)
