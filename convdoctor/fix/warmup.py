"""Warm a model up before it serves: answers ``COLD_START_SLOW``.

The first calls of a model in a process pay one-off costs: lazy initialisation of
kernels and thread pools, allocator growth, oneDNN primitive creation on CPU and cuDNN
autotuning (``torch.backends.cudnn.benchmark``) on CUDA, per input shape. Running a few
inferences at the served shape before the replica takes traffic moves those costs out
of the first requests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._guard import preserve_model_state
from ..capture.inputs import as_args
from ..errors import UsageError

#: A call within this fraction of the last call's time counts as warm.
SETTLED_TOLERANCE = 0.10


@dataclass(frozen=True)
class WarmupResult:
    """Timings of the warm-up calls.

    Attributes:
        times_ms: each call's wall time in order (device work included: CUDA is synchronised).
        settled_after: calls it took until every later call stayed within
            ``SETTLED_TOLERANCE`` of the last one (a hint for choosing ``n``).
    """

    times_ms: tuple[float, ...]
    settled_after: int

    @property
    def first_ms(self) -> float:
        """The first call."""
        return self.times_ms[0]

    @property
    def last_ms(self) -> float:
        """The last call."""
        return self.times_ms[-1]


def _settled_after(times: Sequence[float]) -> int:
    last = times[-1]
    settled = len(times)
    for i in range(len(times) - 1, -1, -1):
        if abs(times[i] - last) > SETTLED_TOLERANCE * last:
            break
        settled = i
    return settled


def _sync(args: tuple[Any, ...]) -> None:
    if any(isinstance(a, torch.Tensor) and a.is_cuda for a in args):
        torch.cuda.synchronize()


def warmup(model: nn.Module, example_input: Any, n: int = 10) -> WarmupResult:
    """Run ``n`` inferences on ``example_input`` so the first real request is not the slow one.

    Answers ``COLD_START_SLOW``. Runs in eval mode under ``torch.inference_mode`` and
    leaves the model as it was (training flags restored, state_dict unchanged): a warm-up
    must never update BatchNorm statistics. Warm up with the shape, dtype and device you
    serve: cuDNN and oneDNN choose kernels per shape.

    Args:
        model: the model that will serve.
        example_input: one input tensor, or a tuple of positional inputs, at the served shape.
        n: calls to run (at least 1).

    Returns:
        The per-call timings; ``settled_after`` suggests how many calls were needed.

    Raises:
        UsageError: ``n`` below 1 or not an integer.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"warmup needs n >= 1 calls, got {n!r}")
    args = as_args(example_input)
    times = []
    with preserve_model_state(model), torch.inference_mode():
        model.eval()
        for _ in range(n):
            start = time.perf_counter()
            model(*args)
            _sync(args)
            times.append((time.perf_counter() - start) * 1e3)
    return WarmupResult(tuple(times), _settled_after(times))
