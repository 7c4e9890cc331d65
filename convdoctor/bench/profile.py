"""Where the time goes: per-module time and peak memory from ``torch.profiler``.

Every module gets a forward pre-hook that opens a ``record_function("module::<path>")``
range and a forward hook that closes it, for the duration of the profiled calls only
(the handles are removed in ``finally``). The profiler's aggregated ranges then give each
module's *inclusive* time per forward: for a leaf module (a conv, a BatchNorm) that is
its own time. The profiler adds a few microseconds per op, so these times are for
ranking layers and for rates, not a replacement for the warm latency.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one forward minus what
was allocated before it. On CPU, the profiler's allocator records (``profile_memory``):
the running sum of allocations and frees in time order, whose maximum is the peak above
the level at the start (weights and input are already allocated, so they do not count).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from .._native import capture_native

log = logging.getLogger(__name__)

#: Prefix of the profiler ranges that mark module calls.
RANGE_PREFIX = "module::"


@dataclass(frozen=True)
class ModuleProfile:
    """Per-module time and the forward's peak memory.

    Attributes:
        module_ms: module path -> inclusive milliseconds per forward (all calls of a
            shared module summed), averaged over ``runs`` profiled forwards.
        peak_bytes: peak bytes allocated during a forward above the level before it, or None.
        peak_reason: why ``peak_bytes`` is None.
        runs: profiled forwards.
        module_reason: why ``module_ms`` is empty.
    """

    module_ms: dict[str, float] = field(default_factory=dict)
    peak_bytes: int | None = None
    peak_reason: str | None = None
    runs: int = 0
    module_reason: str | None = None


@contextmanager
def _module_ranges(model: nn.Module) -> Iterator[None]:
    """Wrap every module call in a ``record_function`` range named after its path."""
    stack: list[Any] = []
    handles = []

    def pre_hook(path: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any) -> None:
            ctx = record_function(RANGE_PREFIX + path)
            ctx.__enter__()  # type: ignore[no-untyped-call]
            stack.append(ctx)

        return hook

    def post_hook(_module: nn.Module, _args: Any, _out: Any) -> None:
        if stack:
            stack.pop().__exit__(None, None, None)

    try:
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(pre_hook(path)))
            handles.append(module.register_forward_hook(post_hook, always_call=True))
        yield
    finally:
        for h in handles:
            h.remove()
        while stack:  # a forward that raised: close what it opened
            stack.pop().__exit__(None, None, None)


def _event_ms(event: Any, cuda: bool) -> float:
    """Total microseconds of an aggregated event -> ms, device time on CUDA when recorded."""
    if cuda:
        device_us = getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0)
        if device_us:
            return float(device_us) / 1e3
    return float(event.cpu_time_total) / 1e3


def cpu_peak_bytes(prof: profile) -> int | None:
    """Peak of the running allocation sum in a CPU profile, or None when unavailable.

    Reads the profiler's raw allocator records (``[memory]`` events with a signed
    ``nbytes`` and a timestamp); aggregated per-op figures lose the order of frees.
    """
    try:
        events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    except AttributeError:
        return None
    records = sorted(
        (e.start_ns(), e.nbytes())  # type: ignore[union-attr]
        for e in events
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU  # type: ignore[attr-defined]
    )
    running = peak = 0
    for _, nbytes in records:
        running += nbytes
        peak = max(peak, running)
    return peak


def _cuda_peak(call: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def profile_modules(
    model: nn.Module, call: Callable[[], object], *, device: str = "cpu", runs: int = 3
) -> ModuleProfile:
    """Profile ``call()`` (a warm forward of ``model``) ``runs`` times.

    Args:
        model: the module ``call`` runs; its modules get temporary profiler ranges.
        call: one forward, already bound to its input, warmed up by the caller.
        device: ``"cpu"`` or ``"cuda"``.
        runs: forwards to profile and average.

    Returns:
        Per-module milliseconds and the peak memory.
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    scripted = isinstance(model, torch.jit.ScriptModule)
    module_reason = "TorchScript modules take no forward hooks" if scripted else None
    # Kineto prints "USDT: ... profiler_start" and, without a GPU, "ERROR: ... gpuGetDeviceCount"
    # from C++ to fd 2: held back (shown under the CLI's -v), never the user's terminal.
    with capture_native("torch.profiler"), contextlib.nullcontext() if scripted else _module_ranges(model):
        # One warm-up step first: the profiler's own start-up cost lands on the first op it sees.
        with profile(
            activities=activities, profile_memory=not cuda, schedule=schedule(wait=0, warmup=1, active=runs)
        ) as prof:
            for i in range(runs + 1):
                call()
                if cuda:
                    torch.cuda.synchronize(dev)
                if i < runs:  # the last active step ends when the profiler exits, keeping its events
                    prof.step()
    module_ms = {
        ev.key[len(RANGE_PREFIX) :]: _event_ms(ev, cuda) / runs
        for ev in prof.key_averages()
        if ev.key.startswith(RANGE_PREFIX)
    }
    if cuda:
        return ModuleProfile(module_ms, _cuda_peak(call, dev), None, runs, module_reason)
    peak = cpu_peak_bytes(prof)
    reason = None if peak is not None else "this torch's profiler exposes no allocator records"
    return ModuleProfile(module_ms, peak, reason, runs, module_reason)
