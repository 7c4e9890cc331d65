"""``check``: inspect + rf + audit (+ a short bench) on one model, one report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..capture.choices import ModelMode, parse_batch_sizes, parse_device
from ..capture.inputs import InputSize, ModelInput, parse_input_spec
from ..capture.load import LoadedModel
from ..capture.once import Captures
from ..capture.prepare import ModelLike, prepare, prepare_model
from ..errors import ConvDoctorError, UsageError, one_line
from ..findings import Finding
from ..inspect import inspect_prepared
from ..results.base import ReportBase, sort_findings
from ..results.check import Report

#: bench settings for check: a short, honest measurement, not a full sweep.
CHECK_BENCH: dict[str, Any] = {
    "min_run_time": 0.5,
    "max_run_time": 5.0,
    "min_samples": 20,
    "cold_start": False,
    "probe": False,
}


def _real(loaded: LoadedModel) -> nn.Module:
    """A real-weight module for the verbs that run the model."""
    if loaded.on_meta:
        if loaded.rebuild is None:
            raise UsageError("this model lives on the meta device; pass one with real weights")
        return loaded.rebuild()
    return loaded.module


class _Prepared:
    """The model and input inspect and rf analyse, prepared once, on first use (inside a step, so
    a failure skips the steps that need it, each with the reason)."""

    def __init__(self, loaded: LoadedModel, size: Any, given: Any) -> None:
        self._args = (loaded, size, given)
        self._done: tuple[LoadedModel, ModelInput] | None = None

    def get(self) -> tuple[LoadedModel, ModelInput]:
        if self._done is None:
            loaded, size, given = self._args
            self._done = prepare(loaded, size, given, meta=True)
        return self._done


def _merge(parts: dict[str, ReportBase]) -> tuple[Finding, ...]:
    """All findings; a code raised about the same place by two verbs is kept once (the later, richer one)."""
    seen: dict[tuple[str, str | None], Finding] = {}
    for part in parts.values():
        for f in part.findings:
            seen[(f.code, f.where)] = f
    return sort_findings(list(seen.values()))


def check(
    model: ModelLike,
    input_size: InputSize = None,
    *,
    sample: Any = None,
    targets: torch.Tensor | None = None,
    object_size: int | str | None = None,
    batch_sizes: int | str | Sequence[int] = (1, 8),
    audit_checks: str | Sequence[str] | None = None,
    bench: bool = True,
    device: str = "cpu",
    weights: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    example_input: Any = None,
    mode: ModelMode | str = ModelMode.AUTO,
    data: str | os.PathLike[str] | None = None,
    trusted: bool = False,
) -> Report:
    """Run every verb on one model and merge the findings.

    Args:
        model: an ``nn.Module`` or a MODEL spec.
        input_size: the input shape (default: the spec's suggestion), or keyword sizes
            ``"pixel_values=1x3x224x224"``.
        sample: real inputs for audit (else synthetic, and audit says so); any
            ``example_input`` form whose one tensor is the batch.
        targets: labels of ``sample``.
        object_size: object size in pixels for the receptive-field findings.
        batch_sizes: batch sizes for audit and bench.
        audit_checks: audit checks to run (default all).
        bench: include a short latency measurement.
        device: ``cpu`` or ``cuda``.
        weights: a state_dict checkpoint for a MODEL spec.
        progress: called with the verb's name before it runs.
        example_input: the same as ``sample`` (the name the other verbs use).
        mode: the train/eval flags audit and bench serve the model with (see ``audit``).
        data: an ImageFolder directory, ``.npz`` or ``.pt`` file of samples (and labels)
            instead of ``sample``.
        trusted: a ``.pt``/``.pt2`` MODEL file you trust: loaded without vetting (it may run
            code; see :mod:`convdoctor.capture.archive`).

    Returns:
        The combined report; a verb that could not run is listed in ``skipped`` with why.
    """
    from ..audit import audit
    from ..bench import bench as run_bench
    from ..rf import rf_prepared

    sizes = parse_batch_sizes(batch_sizes)
    device = parse_device(device)
    if sample is not None and example_input is not None:
        raise UsageError("give sample or example_input, not both (they are the same thing)")
    given = sample if sample is not None else example_input
    spec = model if isinstance(model, str) else None
    loaded = prepare_model(model, weights=weights, mode=mode, trusted=trusted)
    if data is not None:
        given, targets = _load_data(loaded, data, input_size, given, targets)
    real = _real(loaded)
    size = None if given is not None else input_size
    # one capture per distinct call serves inspect, rf, bench's batch of the same shape and the
    # audit's structural reads (which convolution feeds which BatchNorm)
    captures = Captures()
    analysed = _Prepared(loaded, size, given)
    steps: dict[str, Callable[[], ReportBase]] = {
        "inspect": lambda: inspect_prepared(*analysed.get(), captures=captures),
        "rf": lambda: rf_prepared(*analysed.get(), object_size=object_size, captures=captures),
        "audit": lambda: audit(
            real,
            given,
            input_size=size,
            targets=targets,
            batch_sizes=sizes,
            checks=audit_checks,
            device=device,
            mode=ModelMode.AS_IS,
            captures=captures,
        ),
    }
    if bench:
        steps["bench"] = lambda: run_bench(
            spec if spec is not None and weights is None else real,
            size,
            example_input=given,
            batch_sizes=sizes[:2],
            device=device,
            trusted=trusted,
            captures=captures,
            **CHECK_BENCH,
        )
    parts, skipped, seconds = _run_steps(steps, progress)
    return Report(model=loaded.spec, findings=_merge(parts), parts=parts, skipped=skipped, seconds=seconds)


def _load_data(
    loaded: LoadedModel, data: str | os.PathLike[str], input_size: Any, given: Any, targets: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Samples (and labels) from a data file, sized like the model's input for an image folder."""
    from ..audit import load_data

    if given is not None or targets is not None:
        raise UsageError("give data or a sample (with its targets), not both")
    size = parse_input_spec(input_size) or (loaded.default_input_size if Path(data).is_dir() else None)
    found = load_data(Path(data), input_size=size)
    return found.x, found.y


def _run_steps(
    steps: dict[str, Callable[[], ReportBase]], progress: Callable[[str], None] | None
) -> tuple[dict[str, ReportBase], dict[str, str], dict[str, float]]:
    """Run each verb; one that cannot run on this model is skipped with why, a usage error stops all."""
    parts: dict[str, ReportBase] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, step in steps.items():
        if progress is not None:
            progress(name)
        start = time.perf_counter()
        try:
            parts[name] = step()
        except UsageError:
            raise
        except ConvDoctorError as exc:
            skipped[name] = one_line(exc)
        seconds[name] = time.perf_counter() - start
    return parts, skipped, seconds
