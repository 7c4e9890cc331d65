"""``bench`` and ``compare``: latency the way production sees it.

Per model and batch size: warm p50/p90/p99 from one-call samples after a warm-up that is
reported apart (:mod:`.timing`), throughput, cold start in a fresh process (:mod:`.cold`),
peak memory and per-module time (:mod:`.profile`), MACs and arithmetic intensity from the
captured graph (:mod:`._costs`), labelled compute- or memory-bound against this machine's
measured peaks (:mod:`.probe`). Every run happens in eval mode under
``torch.inference_mode`` inside :func:`~convdoctor._guard.preserve_model_state`: the
user's model, its flags, hooks and the thread count are as they were afterwards.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class _NoCudaRuntimeNote(logging.Filter):
    """Drops the one line torch logs when ``torch.utils.benchmark`` pulls in ``cpp_extension``
    on a machine without CUDA ("No CUDA runtime is found"): it would appear on every CLI run
    and says nothing about the user's model. Attached for the import only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in record.getMessage()


def _import_benchmark() -> None:
    cpp_logger = logging.getLogger("torch.utils.cpp_extension")
    note = _NoCudaRuntimeNote()
    cpp_logger.addFilter(note)
    try:
        import torch.utils.benchmark  # noqa: F401
    finally:
        cpp_logger.removeFilter(note)


_import_benchmark()

from torch.utils.benchmark import set_torch_threads  # noqa: E402

from .._guard import preserve_model_state
from ..capture.footprint import ensure_fits, meta_call
from ..capture.inputs import (
    DEFAULT_INPUT_SIZE,
    InputForm,
    InputSize,
    ModelInput,
    format_shape,
    make_input,
)
from ..capture.prepare import model_input, prepare_model
from ..errors import CaptureError, ConvDoctorError, UsageError
from ..findings import Finding
from ..results.base import sort_findings
from ..results.bench import BenchReport, BenchRow, LayerTiming
from . import _findings
from ._costs import ModelCosts, model_costs
from ._options import BenchOptions, Device, Dtype, bench_options, validate_input
from .probe import MachinePeaks, machine_peaks
from .profile import ModuleProfile, profile_modules
from .timing import BenchResult, measure

__all__ = ["BenchOptions", "BenchResult", "Device", "Dtype", "MachinePeaks", "bench", "compare", "machine_peaks"]

log = logging.getLogger(__name__)

#: Called before each step: ``progress(description, done, total)``.
Progress = Callable[[str, int, int], None]


@dataclass
class _Target:
    """A model to bench: the module, its display name, and its spec when it has one."""

    name: str
    module: nn.Module
    call: ModelInput
    spec: str | None = None
    weights: str | None = None
    rebuild: Callable[[], nn.Module] | None = None


def _target(
    model: nn.Module | str, name: str | None, weights: Any, input_size: Any, example_input: Any, trusted: bool
) -> _Target:
    if not isinstance(model, (nn.Module, str)):
        raise UsageError(f"model must be an nn.Module or a MODEL spec string, got {type(model).__name__}")
    loaded = prepare_model(model, weights=weights, trusted=trusted)
    call = model_input(loaded, input_size, example_input, fallback=DEFAULT_INPUT_SIZE)
    call.batched(require_one="bench")  # one batched tensor, images of one size: checked before any timing
    spec = model if isinstance(model, str) else None
    return _Target(
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


def _time_row(target: _Target, batch_size: int, opts: BenchOptions) -> tuple[BenchResult, ModuleProfile | None]:
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


def _costs(target: _Target, batch_size: int, opts: BenchOptions) -> tuple[ModelCosts | None, str | None]:
    try:
        args, kwargs = batch_call(target.call, batch_size, "meta", torch.float32)
        costs = model_costs(
            target.module, None, opts.dtype.torch, target.rebuild, args=args, kwargs=kwargs, captures=opts.captures
        )
        return costs, None
    except ConvDoctorError as exc:
        return None, f"MACs unavailable: {exc}"


def _cold(target: _Target, batch_size: int, opts: BenchOptions) -> Any:
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


def _row(target: _Target, batch_size: int, opts: BenchOptions, peaks: MachinePeaks | None) -> BenchRow:
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


def _peaks(opts: BenchOptions) -> tuple[MachinePeaks | None, dict[str, Any]]:
    if not opts.probe:
        return None, {"reason": "not requested (probe=False)"}
    try:
        peaks = machine_peaks(opts.device, opts.threads, opts.dtype.torch)
    except RuntimeError as exc:  # e.g. a dtype without a matmul kernel on this device
        return None, {"reason": f"peak probe failed: {exc}"}
    return peaks, peaks.to_dict()


def _run(
    targets: list[_Target], opts: BenchOptions, progress: Progress | None
) -> tuple[list[BenchRow], dict[str, Any]]:
    for t in targets:  # before the first allocation: a size that cannot fit is refused with the numbers
        ensure_fits(t.module, *meta_call(t.call, max(opts.batch_sizes)), device=opts.device)
    peaks, machine = _peaks(opts)
    rows = []
    total = len(targets) * len(opts.batch_sizes)
    for i, (t, bs) in enumerate(itertools.product(targets, opts.batch_sizes)):
        if progress is not None:
            progress(f"{t.name} batch {bs}", i, total)
        rows.append(_row(t, bs, opts, peaks))
    if progress is not None:
        progress("done", total, total)
    return rows, machine


def _row_findings(rows: Sequence[BenchRow]) -> list[Finding]:
    found = [f(r) for r in rows for f in (_findings.noisy, _findings.cold_start_slow)]
    return [f for f in found if f is not None]


def bench(
    model: nn.Module | str,
    input_size: InputSize = None,
    *,
    batch_sizes: int | str | Sequence[int] = (1,),
    device: str = "cpu",
    threads: int | None = None,
    dtype: str | torch.dtype = "float32",
    weights: str | os.PathLike[str] | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    example_input: Any = None,
    **options: Any,
) -> BenchReport:
    """Measure a model's latency, throughput, cold start and where its time goes.

    Args:
        model: an ``nn.Module`` or a MODEL spec (a spec also gets a cold start measured in a
            fresh process; a module's cold start is reported absent with the reason).
        input_size: input shape such as ``"1x3x224x224"`` (or keyword sizes
            ``"pixel_values=1x3x224x224"``; ``CxHxW`` is one image for a detector); its batch is
            replaced by each batch size. Default: the spec's suggested size, else 1x3x224x224.
        batch_sizes: sizes to sweep (``(1, 8)``, ``"1,8,32"``).
        device: ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads (default: the current count); always recorded.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (weights and input).
        weights: state_dict checkpoint for a MODEL spec (``weights_only=True``).
        name: display name (default: the spec or the class name).
        progress: ``progress(description, done, total)`` before each row.
        example_input: instead of ``input_size``: a tensor, a tuple of positional args, a list
            of images or a dict of keyword args; its one tensor is cycled along the batch to
            each batch size.
        **options: ``warmup`` (10), ``min_samples`` (100), ``min_run_time`` (1.0 s),
            ``max_run_time`` (30 s), ``cold_start`` (True), ``profile`` (True), ``probe``
            (True), ``top`` (10), ``trusted`` (False), ``captures`` (None): see
            :class:`~convdoctor.bench.BenchOptions`.

    Returns:
        The report: one row per batch size, findings BENCH_NOISY and COLD_START_SLOW.

    Raises:
        UsageError: invalid argument (batch size 0, unknown device, CUDA without a GPU ...).
        ModelLoadError: the spec cannot be loaded.
        CaptureError: the model fails on the input.
    """
    opts = bench_options(batch_sizes, device, threads, dtype, **options)
    validate_input(input_size, example_input)  # before loading anything
    target = _target(model, name, weights, input_size, example_input, opts.trusted)
    rows, machine = _run([target], opts, progress)
    return BenchReport(
        model=target.name,
        findings=sort_findings(_row_findings(rows)),
        rows=tuple(rows),
        machine=machine,
        method=opts.method(),
    )


def compare(
    models: Mapping[str, nn.Module | str],
    input_size: InputSize = None,
    *,
    progress: Progress | None = None,
    **bench_kwargs: Any,
) -> BenchReport:
    """Bench several models under the same conditions, ratios against the first.

    Args:
        models: display name -> ``nn.Module`` or MODEL spec, in the order to report; the
            first is the reference of every ratio.
        input_size: as for :func:`bench` (one size for all models).
        progress: as for :func:`bench`.
        **bench_kwargs: any keyword of :func:`bench` (``batch_sizes``, ``device``, ``threads``, ...).

    Returns:
        One report with every model's rows; ``report.ratios()`` and the JSON
        ``comparison`` hold MACs, params, p50, p99 and throughput ratios to the first model;
        findings add MACS_NOT_LATENCY.

    Raises:
        UsageError: no models, or an invalid argument.
    """
    if not models:
        raise UsageError("compare needs at least one model, e.g. {'resnet18': 'torchvision:resnet18'}")
    for key in ("name", "weights", "captures"):
        if bench_kwargs.pop(key, None) is not None:
            raise UsageError(f"{key}= applies to one model; use bench() for it")
    example_input = bench_kwargs.pop("example_input", None)
    opts = bench_options(
        bench_kwargs.pop("batch_sizes", (1,)),
        bench_kwargs.pop("device", "cpu"),
        bench_kwargs.pop("threads", None),
        bench_kwargs.pop("dtype", "float32"),
        **bench_kwargs,
    )
    validate_input(input_size, example_input)
    targets = [_target(m, str(n), None, input_size, example_input, opts.trusted) for n, m in models.items()]
    rows, machine = _run(targets, opts, progress)
    report = BenchReport(
        model=" vs ".join(t.name for t in targets), rows=tuple(rows), machine=machine, method=opts.method()
    )
    findings = _row_findings(rows) + _findings.macs_not_latency(report)
    return BenchReport(
        model=report.model, findings=sort_findings(findings), rows=report.rows, machine=machine, method=report.method
    )
