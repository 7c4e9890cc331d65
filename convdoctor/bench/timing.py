"""Warm latency, measured with ``torch.utils.benchmark`` one call per sample.

Method (every figure convdoctor prints depends on it, so it is stated here once):

1. **Warm-up apart.** The first ``warmup`` calls are timed with the same clock and the
   same loop, and kept in :attr:`BenchResult.warmup_ms`; they never enter the warm
   statistics. ``warmup_ms[0]`` is the in-process first call.
2. **Threads fixed and recorded.** Warm-up and samples run under
   ``torch.utils.benchmark``'s ``set_torch_threads(threads)``, which restores the previous
   count afterwards; ``threads`` is stored in the result.
3. **One call per sample.** torch's ``blocked_autorange`` times blocks of calls sized so
   that timer overhead is below 0.01% and reports per-block means: right for a median,
   wrong for a tail, because a block of 100 calls hides its one slow call. A request in
   production is one call, so each sample here is one call (``number_per_run == 1``),
   timed the way torch's ``Timer`` times a block: ``timeit.Timer`` (garbage collection
   off while it runs) around ``fn()``, in the same stopping loop as ``blocked_autorange``,
   written here on public pieces (``timeit``, ``set_torch_threads``, ``Measurement``)
   because torch's loop is private. The clock costs ~0.1 us on CPU, under 0.1% of any CNN
   forward worth timing.
4. **Stopping rule.** Sampling stops once at least ``min_samples`` samples and
   ``min_run_time`` seconds of samples are in, or ``max_run_time`` seconds have passed
   (then ``n_samples`` may be smaller and a warning says so).
5. **Clocks.** CPU: ``time.perf_counter``. CUDA: CUDA events on the current stream,
   synchronised at every reading, so each sample is launch plus kernel time, the way a
   caller waiting for the result sees it.
6. **Statistics.** Median, IQR and mean come from torch's ``Measurement``; p90 and p99
   use the same linear-interpolation quantile on the raw samples. Throughput is
   ``batch_size / median`` (samples per second). A relative IQR above 10% (torch's own
   ``_IQR_WARN_THRESHOLD``) marks the measurement noisy.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.benchmark import Measurement, TaskSpec, set_torch_threads

#: Relative IQR (IQR / median) above which a measurement is noisy. Same value as torch's
#: ``torch.utils.benchmark.utils.common._IQR_WARN_THRESHOLD``.
NOISY_REL_IQR = 0.10

#: Below this many samples p99 is essentially the maximum: it is reported, with a warning.
TAIL_MIN_SAMPLES = 100

Clock = Callable[[], float]


class CudaEventClock:
    """A seconds clock read from CUDA events, synchronised at each reading.

    Each reading records an event on the current stream, waits for it, and adds the
    event-to-event time (milliseconds, float32 in CUDA) to a float64 running total, so
    precision does not decay over a long run.
    """

    def __init__(self) -> None:
        self._last = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        self._last.record()
        self._last.synchronize()
        self._elapsed = 0.0

    def __call__(self) -> float:
        """Seconds since the clock was made, after all queued work has finished."""
        event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        event.record()
        event.synchronize()
        self._elapsed += self._last.elapsed_time(event) / 1e3
        self._last = event
        return self._elapsed


def clock_for(device: str) -> Clock:
    """The clock for a device type: ``perf_counter`` on CPU, CUDA events on CUDA."""
    if torch.device(device).type == "cuda":
        return CudaEventClock()
    return time.perf_counter


#: Floor of one reading, as in torch's ``Timer``: no call takes under 1 ns, and a zero
#: would divide throughput by zero.
_MIN_SAMPLE_S = 1e-9


def sample_calls(
    fn: Callable[[], object],
    *,
    clock: Clock,
    threads: int,
    min_samples: int,
    min_run_time: float,
    max_run_time: float | None,
) -> Measurement:
    """Time ``fn()`` one call per sample until the stopping rule holds (module docstring, 3-4).

    Args:
        fn: the call to time.
        clock: seconds clock read before and after each call.
        threads: intra-op threads to run with (the previous count is restored).
        min_samples: keep sampling until at least this many samples are in ...
        min_run_time: ... and at least this many seconds of samples ...
        max_run_time: ... unless this many seconds have passed (None or 0: no cap).

    Returns:
        A torch ``Measurement`` with ``number_per_run == 1`` and every sample in order.
    """
    one_call = timeit.Timer(stmt="fn()", globals={"fn": fn}, timer=clock)
    times: list[float] = []
    total = 0.0
    with set_torch_threads(threads):
        while not times or total < min_run_time or len(times) < min_samples:  # one sample at least
            spent = max(one_call.timeit(1), _MIN_SAMPLE_S)
            times.append(spent)
            total += spent
            if max_run_time and total > max_run_time:
                break
    spec = TaskSpec(stmt="fn()", setup="pass", label="convdoctor.bench", num_threads=threads)
    return Measurement(number_per_run=1, raw_times=times, task_spec=spec)


@dataclass(frozen=True)
class BenchResult:
    """Warm latency of one callable at one batch size (method: module docstring).

    Attributes:
        samples_ms: every warm sample, one call each, in the order measured.
        warmup_ms: the warm-up calls, in order, excluded from every statistic below.
        batch_size: samples per call (for throughput).
        threads: intra-op threads the calls ran with.
        device: ``"cpu"`` or ``"cuda"``.
        median_ms: median sample (torch ``Measurement.median``); equal to ``p50_ms``.
        iqr_ms: interquartile range (torch ``Measurement.iqr``).
        mean_ms: mean sample.
        p50_ms: 50th percentile.
        p90_ms: 90th percentile.
        p99_ms: 99th percentile (close to the maximum below ``TAIL_MIN_SAMPLES`` samples).
        throughput: ``batch_size / median``, samples per second.
        rel_iqr: ``iqr / median``.
        warnings: why a figure deserves less trust (noise, few samples).
    """

    samples_ms: tuple[float, ...]
    warmup_ms: tuple[float, ...]
    batch_size: int
    threads: int
    device: str
    median_ms: float
    iqr_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float
    rel_iqr: float
    warnings: tuple[str, ...] = ()

    @property
    def n_samples(self) -> int:
        """Number of warm samples."""
        return len(self.samples_ms)

    @property
    def first_call_ms(self) -> float | None:
        """The first warm-up call (None when there was no warm-up)."""
        return self.warmup_ms[0] if self.warmup_ms else None

    @property
    def noisy(self) -> bool:
        """Whether the relative IQR exceeds :data:`NOISY_REL_IQR`."""
        return self.rel_iqr > NOISY_REL_IQR

    @classmethod
    def from_measurement(
        cls,
        measurement: Measurement,
        warmup_s: Sequence[float],
        *,
        batch_size: int,
        threads: int,
        device: str,
        min_samples: int = 0,
    ) -> BenchResult:
        """Summarise a one-call-per-sample torch ``Measurement``.

        Args:
            measurement: warm samples (``number_per_run`` must be 1).
            warmup_s: warm-up call times in seconds.
            batch_size: samples per call.
            threads: thread count used.
            device: device type.
            min_samples: the count asked for, to warn when the time cap cut sampling short.

        Returns:
            The result.
        """
        if measurement.number_per_run != 1:
            raise ValueError("BenchResult needs one call per sample (number_per_run == 1)")
        times = list(measurement.times)
        if not times:
            raise ValueError("no samples were measured")
        ordered = torch.tensor(sorted(times), dtype=torch.float64)
        p90, p99 = (ordered.quantile(q).item() for q in (0.90, 0.99))
        median, iqr = measurement.median, measurement.iqr
        rel_iqr = iqr / median if median > 0 else float("inf")
        return cls(
            samples_ms=tuple(t * 1e3 for t in times),
            warmup_ms=tuple(t * 1e3 for t in warmup_s),
            batch_size=batch_size,
            threads=threads,
            device=device,
            median_ms=median * 1e3,
            iqr_ms=iqr * 1e3,
            mean_ms=measurement.mean * 1e3,
            p50_ms=median * 1e3,
            p90_ms=p90 * 1e3,
            p99_ms=p99 * 1e3,
            throughput=batch_size / median if median > 0 else float("inf"),
            rel_iqr=rel_iqr,
            warnings=_warnings(len(times), rel_iqr, min_samples),
        )


def _warnings(n: int, rel_iqr: float, min_samples: int) -> tuple[str, ...]:
    out = []
    if rel_iqr > NOISY_REL_IQR:
        out.append(
            f"IQR is {rel_iqr:.0%} of the median (over {NOISY_REL_IQR:.0%}): the machine was busy or "
            "the clock frequency moved"
        )
    if n < min_samples:
        out.append(f"max_run_time reached after {n} of {min_samples} samples")
    if n < TAIL_MIN_SAMPLES:
        out.append(f"p99 from {n} samples (< {TAIL_MIN_SAMPLES}) is close to the maximum")
    return tuple(out)


def measure(
    fn: Callable[[], object],
    *,
    batch_size: int,
    threads: int,
    device: str = "cpu",
    warmup: int = 10,
    min_samples: int = 100,
    min_run_time: float = 1.0,
    max_run_time: float | None = 30.0,
    clock: Clock | None = None,
) -> BenchResult:
    """Time ``fn()`` warm, one call per sample (method: module docstring).

    Args:
        fn: the call to time (already bound to its inputs).
        batch_size: samples per call, for throughput.
        threads: intra-op thread count to run with (restored afterwards).
        device: ``"cpu"`` or ``"cuda"``; picks the clock.
        warmup: calls run and timed before sampling, reported apart.
        min_samples: sample at least this many calls ...
        min_run_time: ... and at least this many seconds of calls ...
        max_run_time: ... unless this many seconds have passed (None: no cap).
        clock: seconds clock to time with (default: :func:`clock_for` the device).

    Returns:
        The result, raw samples included.
    """
    tick = clock or clock_for(device)
    warm: list[float] = []
    if warmup > 0:
        warm = list(
            sample_calls(fn, clock=tick, threads=threads, min_samples=warmup, min_run_time=0.0, max_run_time=None).times
        )
    measured = sample_calls(
        fn, clock=tick, threads=threads, min_samples=min_samples, min_run_time=min_run_time, max_run_time=max_run_time
    )
    return BenchResult.from_measurement(
        measured, warm, batch_size=batch_size, threads=threads, device=device, min_samples=min_samples
    )
