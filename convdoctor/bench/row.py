"""One row of a bench report: everything measured for one model at one batch size.

Warm timing and the per-module profile run inside
:func:`~convdoctor._guard.preserve_model_state` under ``torch.inference_mode`` on the user's
module (or a copy on the device and dtype asked for); MACs and bytes come from a meta capture
(:mod:`._costs`); cold start from a fresh process (:mod:`.cold`).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn
from torch.utils.benchmark import set_torch_threads

from .._guard import preserve_model_state
from ..capture.inputs import InputForm, ModelInput, format_shape
from ..errors import CaptureError, ConvDoctorError
from ..results.bench import BenchRow, LayerTiming
from ._costs import ModelCosts, model_costs
from ._options import BenchOptions
from .probe import MachinePeaks
from .profile import ModuleProfile, profile_modules
from .target import Target, batch_call
from .timing import BenchResult, measure


def _runner(model: nn.Module, opts: BenchOptions) -> nn.Module:
    """The module to time: the user's own when it already lives on the device in the dtype, else a copy."""
    target = torch.device(opts.device)
    dtype = opts.dtype.torch
    tensors = itertools.chain(model.parameters(), model.buffers())
    if all(t.device.type == target.type and (not t.is_floating_point() or t.dtype == dtype) for t in tensors):
        return model
    return copy.deepcopy(model).to(device=target, dtype=dtype)  # never move the user's model in place


def _layers(
    costs: ModelCosts | None, prof: ModuleProfile, peaks: MachinePeaks | None, model: nn.Module, top: int
) -> tuple[tuple[LayerTiming, ...], float | None]:
    """Leaf modules by profiled time, with MACs, bytes and labels; and the memory-bound time share."""
    leaves = {path: type(m).__name__ for path, m in model.named_modules() if not any(True for _ in m.children())}
    total = prof.module_ms.get("", 0.0) or sum(prof.module_ms.get(p, 0.0) for p in leaves)
    rows = []
    for path, mtype in leaves.items():
        ms = prof.module_ms.get(path)
        if ms is None:
            continue
        macs = costs.layer_macs.get(path, 0) if costs else None
        nbytes = costs.layer_bytes.get(path, 0) if costs else 0
        intensity = macs / nbytes if macs is not None and nbytes else None
        rate = macs / (ms * 1e6) if macs is not None and ms > 0 else None
        bound = peaks.bound(intensity) if peaks is not None and intensity is not None else None
        rows.append(LayerTiming(path, mtype, ms, ms / total if total else 0.0, macs, nbytes, rate, intensity, bound))
    labelled = [r for r in rows if r.bound is not None]
    labelled_ms = sum(r.time_ms for r in labelled)
    mem_share = sum(r.time_ms for r in labelled if r.bound == "memory-bound") / labelled_ms if labelled_ms > 0 else None
    rows.sort(key=lambda r: -r.time_ms)
    return tuple(rows[:top]), mem_share


def _time_row(target: Target, batch_size: int, opts: BenchOptions) -> tuple[BenchResult, ModuleProfile | None]:
    """Warm timing and profile of one batch size, the user's model left as it was."""
    model = target.module
    with preserve_model_state(model, verify=True), set_torch_threads(opts.threads):
        runner = _runner(model, opts)  # a copy, when made, is made outside inference mode
        runner.eval()
        args, kwargs = batch_call(target.call, batch_size, opts.device, opts.dtype.torch)
        with torch.inference_mode():
            return _measure_call(target.name, runner, args, kwargs, batch_size, opts)


def _measure_call(
    name: str, runner: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], batch_size: int, opts: BenchOptions
) -> tuple[BenchResult, ModuleProfile | None]:
    """Warm timing, then the profile; any failure of the model becomes one CaptureError line."""

    def call() -> object:
        return runner(*args, **kwargs)

    try:
        result = measure(
            call,
            batch_size=batch_size,
            threads=opts.threads,
            device=opts.device_type,
            warmup=opts.warmup,
            min_samples=opts.min_samples,
            min_run_time=opts.min_run_time,
            max_run_time=opts.max_run_time,
        )
        prof = profile_modules(runner, call, device=opts.device) if opts.profile else None
    except ConvDoctorError:
        raise
    except Exception as exc:  # the user's forward can raise anything: one line, with where
        first = (str(exc).strip().splitlines() or [""])[0]
        shape = ", ".join(format_shape(t.shape) for t in ModelInput(args, kwargs).tensors)
        raise CaptureError(f"{name} failed at input {shape} on {opts.device}: {type(exc).__name__}: {first}") from exc
    return result, prof


def _costs(target: Target, batch_size: int, opts: BenchOptions) -> tuple[ModelCosts | None, str | None]:
    try:
        args, kwargs = batch_call(target.call, batch_size, "meta", torch.float32)
        costs = model_costs(
            target.module, None, opts.dtype.torch, target.rebuild, args=args, kwargs=kwargs, captures=opts.captures
        )
        return costs, None
    except ConvDoctorError as exc:
        return None, f"MACs unavailable: {exc}"


def _cold(target: Target, batch_size: int, opts: BenchOptions) -> Any:
    from .cold import ColdStart, cold_start

    shape = (batch_size, *target.call.batched().shape[1:])
    if not opts.cold_start:
        return ColdStart(None, reason="not requested (cold_start=False)")
    if target.spec is None:
        return ColdStart(
            None,
            reason="needs a MODEL spec a fresh process can load (e.g. 'torchvision:resnet18', "
            "'pkg.module:factory'); a module object cannot be rebuilt there",
        )
    if target.call.form not in (InputForm.SIZE, InputForm.TENSOR):
        return ColdStart(
            None, reason=f"the fresh process calls model(x); a {target.call.form.value} input is not replayed there"
        )
    return cold_start(
        target.spec,
        shape,
        device=opts.device,
        threads=opts.threads,
        dtype=opts.dtype.value,
        weights=target.weights,
        trusted=opts.trusted,
    )


def bench_row(target: Target, batch_size: int, opts: BenchOptions, peaks: MachinePeaks | None) -> BenchRow:
    """Everything measured for one model at one batch size."""
    costs, costs_reason = _costs(target, batch_size, opts)
    result, prof = _time_row(target, batch_size, opts)
    cold = _cold(target, batch_size, opts)
    layers, mem_share = _layers(costs, prof, peaks, target.module, opts.top) if prof else ((), None)
    macs = costs.macs if costs and not costs.uncounted else None
    intensity = costs.intensity if macs is not None and costs else None
    warnings = list(result.warnings) + [w for w in (costs_reason,) if w]
    if prof and prof.module_reason:
        warnings.append(f"per-module time absent: {prof.module_reason}")
    if costs and costs.uncounted:
        warnings.append(f"MACs absent: ops with unknown cost ran ({', '.join(sorted(costs.uncounted))})")
    return BenchRow(
        model=target.name,
        batch_size=batch_size,
        device=opts.device,
        threads=opts.threads,
        dtype=opts.dtype.value,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        mean_ms=result.mean_ms,
        iqr_ms=result.iqr_ms,
        rel_iqr=result.rel_iqr,
        throughput=result.throughput,
        n_samples=result.n_samples,
        samples_ms=result.samples_ms,
        warmup_ms=result.warmup_ms,
        first_call_ms=result.first_call_ms,
        cold_start_ms=cold.cold_start_ms,
        cold_start=dict(cold.phases),
        cold_start_reason=cold.reason,
        peak_mem_bytes=prof.peak_bytes if prof else None,
        peak_mem_reason=(prof.peak_reason if prof else "not requested (profile=False)"),
        macs=macs,
        params=costs.params if costs else None,
        gmacs_per_s=macs / (result.p50_ms * 1e6) if macs is not None else None,
        intensity=intensity,
        bound=peaks.bound(intensity) if peaks and intensity is not None else None,
        memory_bound_share=mem_share,
        warnings=tuple(warnings),
        layers=layers,
    )
