"""bench against real time: a module whose forward takes a known time, k ms per sample.

The scripted-clock tests (test_timing.py) check the statistics; this checks the clock and the
plumbing end to end: that a sample is the duration of one call (not of a block, not of another
batch size's call) and that throughput is samples per second. The forward busy-waits (sleep
may oversleep by a scheduler tick) ``k * batch`` ms on ``time.perf_counter`` and records how
long it really took: on a loaded machine a spin can overshoot its target when the process is
descheduled, so the oracle is each call's own wall time, never less than ``k * batch``. The
timer, the input and the Python call can only add to it: sample i lies in [1.0, 1.3] x the
call it timed, and p50 in [1.0, 1.3] x the median call. On CUDA the same CPU-side wait sits
between two events on an idle stream, so the event clock must read the same wall time.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from torch import nn

from convdoctor.bench import bench

MS_PER_SAMPLE = 4.0
BATCHES = (1, 3)
#: timer, input copy and a Python call cost well under 0.3 x 4 ms
UPPER = 1.3
#: perf_counter inside forward vs the bench clock (CUDA events resolve ~0.5 us)
CLOCK_SLACK_MS = 0.05
FAST = {
    "warmup": 1,
    "min_samples": 5,
    "min_run_time": 0.0,
    "max_run_time": 5.0,
    "cold_start": False,
    "profile": False,
    "probe": False,
}


#: ``(batch, ms)`` per real call; outside the module, because bench restores the model's
#: attributes as it found them (and may run a copy)
CALLS: list[tuple[int, float]] = []


class BusyWait(nn.Module):
    """Spins ``ms_per_sample * batch`` ms of wall time; appends ``(batch, ms it really took)`` to CALLS."""

    def __init__(self, ms_per_sample: float) -> None:
        super().__init__()
        self.ms_per_sample = ms_per_sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        end = start + self.ms_per_sample * x.shape[0] / 1e3
        while time.perf_counter() < end:
            pass
        if x.device.type != "meta":  # the capture's meta forward is not a timed call
            CALLS.append((x.shape[0], (time.perf_counter() - start) * 1e3))
        return x + 1


def _check_rows(report) -> None:  # noqa: ANN001
    rows = {r.batch_size: r for r in report.rows}
    assert sorted(rows) == list(BATCHES)
    for batch, row in rows.items():
        calls = [ms for b, ms in CALLS if b == batch]
        assert len(calls) == FAST["warmup"] + row.n_samples == FAST["warmup"] + len(row.samples_ms)
        timed = calls[FAST["warmup"] :]  # samples come after the warm-up, in call order
        assert min(timed) >= MS_PER_SAMPLE * batch  # the known duration, at least
        for sample, call in zip(row.samples_ms, timed):
            assert call - CLOCK_SLACK_MS <= sample <= UPPER * call + CLOCK_SLACK_MS, (batch, sample, call)
        median = statistics.median(timed)
        assert median - CLOCK_SLACK_MS <= row.p50_ms <= UPPER * median, (batch, row.p50_ms, median)
        # throughput is samples per second of that same median
        assert row.throughput == pytest.approx(batch / (row.p50_ms / 1e3))
        assert batch / (UPPER * median / 1e3) <= row.throughput <= batch / ((median - CLOCK_SLACK_MS) / 1e3)


def test_cpu_perf_counter_reads_the_known_duration() -> None:
    CALLS.clear()
    _check_rows(bench(BusyWait(MS_PER_SAMPLE), "1x1x4x4", batch_sizes=BATCHES, threads=1, **FAST))


@pytest.mark.cuda
def test_cuda_event_clock_reads_the_known_duration() -> None:
    CALLS.clear()
    report = bench(BusyWait(MS_PER_SAMPLE), "1x1x4x4", batch_sizes=BATCHES, device="cuda", **FAST)
    assert all(r.device.startswith("cuda") for r in report.rows)
    _check_rows(report)
