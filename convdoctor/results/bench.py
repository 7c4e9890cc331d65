"""``BenchReport``: latency, throughput, cold start and where the time goes, per model and batch size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from .base import ReportBase


@dataclass(frozen=True)
class LayerTiming:
    """One module's share of a forward.

    Attributes:
        name: module path.
        type: class name.
        time_ms: profiled milliseconds per forward (profiler overhead included).
        share: ``time_ms`` over the profiled time of the whole forward.
        macs: MACs of the ops that ran in it (None when one of them is uncounted).
        bytes: bytes moved, no-reuse convention (see ``convdoctor.bench._costs``).
        gmacs_per_s: achieved rate, ``macs / time``; None without MACs.
        intensity: MACs per byte moved; None without MACs or bytes.
        bound: ``"compute-bound"`` or ``"memory-bound"`` against the machine's ridge point.
    """

    name: str
    type: str
    time_ms: float
    share: float
    macs: int | None
    bytes: int
    gmacs_per_s: float | None
    intensity: float | None
    bound: str | None


@dataclass(frozen=True)
class BenchRow:
    """One model at one batch size. Absent figures are None with a ``*_reason``.

    Attributes:
        model: model name (spec, dict key, or class name).
        batch_size: samples per call.
        device: ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads the warm calls ran with.
        dtype: dtype of weights and input.
        p50_ms: warm median latency per call.
        p90_ms: warm 90th percentile.
        p99_ms: warm 99th percentile.
        mean_ms: warm mean.
        iqr_ms: warm interquartile range.
        rel_iqr: ``iqr / median``.
        throughput: samples per second at the median (``batch_size / p50``).
        n_samples: warm samples measured (one call each).
        samples_ms: the raw warm samples.
        warmup_ms: the warm-up calls, excluded from the warm figures.
        first_call_ms: the first warm-up call in this process.
        cold_start_ms: load + first inference in a fresh process.
        cold_start: the cold-start phases (``import_ms``, ``load_ms``, ``first_inference_ms``, ...).
        cold_start_reason: why ``cold_start_ms`` is None.
        peak_mem_bytes: peak memory a forward allocates above the level before it.
        peak_mem_reason: why ``peak_mem_bytes`` is None.
        macs: MACs of one call at this batch size.
        params: parameters.
        gmacs_per_s: achieved model rate, ``macs / p50``.
        intensity: model MACs per byte moved.
        bound: the model's label against the ridge point.
        memory_bound_share: share of the profiled leaf-module time spent in memory-bound layers.
        warnings: why a figure deserves less trust.
        layers: the top modules by time.
    """

    model: str
    batch_size: int
    device: str
    threads: int
    dtype: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    iqr_ms: float
    rel_iqr: float
    throughput: float
    n_samples: int
    samples_ms: tuple[float, ...]
    warmup_ms: tuple[float, ...]
    first_call_ms: float | None
    cold_start_ms: float | None = None
    cold_start: dict[str, Any] = field(default_factory=dict)
    cold_start_reason: str | None = None
    peak_mem_bytes: int | None = None
    peak_mem_reason: str | None = None
    macs: int | None = None
    params: int | None = None
    gmacs_per_s: float | None = None
    intensity: float | None = None
    bound: str | None = None
    memory_bound_share: float | None = None
    warnings: tuple[str, ...] = ()
    layers: tuple[LayerTiming, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with DESIGN's keys first."""
        return asdict(self)


@dataclass(frozen=True)
class Ratio:
    """One model against the reference (the first model) at one batch size.

    Attributes:
        model: the model.
        batch_size: the batch size.
        macs_ratio: its MACs over the reference's (None when either is unknown).
        params_ratio: its parameters over the reference's.
        p50_ratio: its p50 over the reference's.
        p99_ratio: its p99 over the reference's.
        throughput_ratio: its throughput over the reference's.
    """

    model: str
    batch_size: int
    macs_ratio: float | None
    params_ratio: float | None
    p50_ratio: float
    p99_ratio: float
    throughput_ratio: float


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass(frozen=True)
class BenchReport(ReportBase):
    """The bench document: one row per (model, batch size), the machine's peaks, the method.

    Attributes:
        rows: results, in the order measured (models in the order given, batch sizes ascending).
        machine: the measured peaks (``gmacs_per_s``, ``gbytes_per_s``, ``ridge_macs_per_byte``, ...).
        method: how the figures were measured (warm-up, stopping rule, clock).
    """

    kind: ClassVar[str] = "bench"
    rows: tuple[BenchRow, ...] = ()
    machine: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """Model names in order of first appearance."""
        return list(dict.fromkeys(r.model for r in self.rows))

    def row(self, model: str, batch_size: int) -> BenchRow | None:
        """The row of one model at one batch size, if measured."""
        return next((r for r in self.rows if r.model == model and r.batch_size == batch_size), None)

    def ratios(self) -> list[Ratio]:
        """Every row against the first model's row at the same batch size."""
        if not self.rows:
            return []
        ref_name = self.rows[0].model
        out = []
        for r in self.rows:
            ref = self.row(ref_name, r.batch_size)
            if ref is None:
                continue
            out.append(
                Ratio(
                    model=r.model,
                    batch_size=r.batch_size,
                    macs_ratio=_ratio(r.macs, ref.macs),
                    params_ratio=_ratio(r.params, ref.params),
                    p50_ratio=r.p50_ms / ref.p50_ms,
                    p99_ratio=r.p99_ms / ref.p99_ms,
                    throughput_ratio=r.throughput / ref.throughput,
                )
            )
        return out

    def _payload(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.rows],
            "comparison": [asdict(x) for x in self.ratios()] if len(self.models) > 1 else [],
            "machine": dict(self.machine),
            "method": dict(self.method),
        }
