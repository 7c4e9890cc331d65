"""Warm timing: per-call samples, warm-up apart, threads, statistics against numpy.

A scripted clock replaces wall time: each call of the timed function advances it by a
known duration, so every sample is known exactly and no assertion depends on speed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.benchmark import Measurement, TaskSpec

from convdoctor.bench.timing import (
    NOISY_REL_IQR,
    TAIL_MIN_SAMPLES,
    BenchResult,
    clock_for,
    measure,
    sample_calls,
)


class ScriptedClock:
    """A clock that only moves when the timed function says so."""

    def __init__(self, durations_s: list[float]) -> None:
        self.now = 0.0
        self.durations = list(durations_s)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def fn(self) -> None:
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def test_warmup_is_timed_apart_and_samples_are_single_calls() -> None:
    warm = [0.500, 0.200, 0.100]  # the first calls are slow
    steady = [0.010 + 0.001 * i for i in range(20)]
    clock = ScriptedClock(warm + steady)
    res = measure(
        clock.fn, batch_size=4, threads=1, warmup=3, min_samples=20, min_run_time=0.0, max_run_time=None, clock=clock
    )
    assert clock.calls == 3 + 20  # every call is either a warm-up call or one sample
    assert res.warmup_ms == pytest.approx([500.0, 200.0, 100.0])
    assert res.samples_ms == pytest.approx([s * 1e3 for s in steady])
    assert res.first_call_ms == pytest.approx(500.0)
    assert max(res.samples_ms) < min(res.warmup_ms)  # no warm-up call leaked into the warm figures


def test_statistics_match_numpy_on_raw_samples() -> None:
    rng = np.random.default_rng(0)
    durations = list(rng.lognormal(mean=np.log(0.02), sigma=0.3, size=200))
    clock = ScriptedClock(durations)
    res = measure(
        clock.fn, batch_size=8, threads=1, warmup=0, min_samples=200, min_run_time=0.0, max_run_time=None, clock=clock
    )
    ms = np.array(durations) * 1e3
    assert res.n_samples == 200
    assert res.p50_ms == pytest.approx(np.percentile(ms, 50))
    assert res.median_ms == pytest.approx(np.median(ms))
    assert res.p90_ms == pytest.approx(np.percentile(ms, 90))
    assert res.p99_ms == pytest.approx(np.percentile(ms, 99))
    assert res.mean_ms == pytest.approx(ms.mean())
    assert res.iqr_ms == pytest.approx(np.percentile(ms, 75) - np.percentile(ms, 25))
    assert res.throughput == pytest.approx(8 / (np.median(ms) / 1e3))


def test_noise_warning_on_wide_spread() -> None:
    quiet = ScriptedClock([0.010, 0.0101, 0.0099, 0.0100])
    noisy = ScriptedClock([0.010, 0.020, 0.005, 0.030])
    kw = dict(batch_size=1, threads=1, warmup=0, min_samples=100, min_run_time=0.0, max_run_time=None)
    r_quiet = measure(quiet.fn, clock=quiet, **kw)
    r_noisy = measure(noisy.fn, clock=noisy, **kw)
    assert not r_quiet.noisy and r_quiet.rel_iqr < NOISY_REL_IQR
    assert r_noisy.noisy and any("IQR" in w for w in r_noisy.warnings)


def test_max_run_time_cuts_sampling_and_says_so() -> None:
    clock = ScriptedClock([1.0])
    res = measure(
        clock.fn, batch_size=1, threads=1, warmup=0, min_samples=50, min_run_time=0.0, max_run_time=3.5, clock=clock
    )
    assert res.n_samples == 4  # 4 s of samples passes the 3.5 s cap
    assert any("max_run_time" in w for w in res.warnings)
    assert any(str(TAIL_MIN_SAMPLES) in w for w in res.warnings)


def test_min_run_time_extends_sampling() -> None:
    clock = ScriptedClock([0.1])
    res = measure(
        clock.fn, batch_size=1, threads=1, warmup=0, min_samples=2, min_run_time=1.0, max_run_time=None, clock=clock
    )
    assert res.n_samples == pytest.approx(10, abs=1)  # 10 x 0.1 s reach 1 s (float sums may need an 11th)


def test_threads_applied_during_calls_recorded_and_restored() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    want = 1 if before != 1 else 2
    res = measure(
        lambda: seen.append(torch.get_num_threads()),
        batch_size=1,
        threads=want,
        warmup=2,
        min_samples=3,
        min_run_time=0.0,
    )
    assert set(seen) == {want}
    assert res.threads == want
    assert torch.get_num_threads() == before


def test_from_measurement_rejects_blocked_samples() -> None:
    m = Measurement(number_per_run=10, raw_times=[1.0], task_spec=TaskSpec("fn()", "pass"))
    with pytest.raises(ValueError, match="one call per sample"):
        BenchResult.from_measurement(m, [], batch_size=1, threads=1, device="cpu")


def test_sample_calls_gives_one_call_per_sample_in_a_torch_measurement() -> None:
    clock = ScriptedClock([0.002, 0.004])
    m = sample_calls(clock.fn, clock=clock, threads=1, min_samples=7, min_run_time=0.0, max_run_time=None)
    assert clock.calls == 7
    assert m.number_per_run == 1 and m.times == pytest.approx([0.002, 0.004] * 3 + [0.002])
    assert m.median == pytest.approx(0.002)  # torch's own statistic over our samples: 4 of 7 are 2 ms


def test_sample_calls_takes_one_sample_even_when_nothing_is_asked() -> None:
    clock = ScriptedClock([0.003])
    m = sample_calls(clock.fn, clock=clock, threads=1, min_samples=0, min_run_time=0.0, max_run_time=None)
    assert m.times == pytest.approx([0.003])


def test_sample_calls_disables_gc_during_each_call_like_torch_timer() -> None:
    import gc

    seen: list[bool] = []
    sample_calls(
        lambda: seen.append(gc.isenabled()),
        clock=ScriptedClock([0.0]),
        threads=1,
        min_samples=3,
        min_run_time=0.0,
        max_run_time=None,
    )
    assert seen == [False, False, False]
    assert gc.isenabled()


def test_cpu_clock_is_perf_counter() -> None:
    import time

    assert clock_for("cpu") is time.perf_counter


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_event_clock_measures_synchronised_work() -> None:
    clock = clock_for("cuda")
    a = torch.randn(2048, 2048, device="cuda")
    t0 = clock()
    for _ in range(10):
        a @ a
    t1 = clock()
    torch.cuda.synchronize()
    # 10 matmuls of 2048^3 MACs: the clock must have waited for them (> 0) and be monotonic.
    assert t1 > t0 >= 0.0
    res = measure(lambda: a @ a, batch_size=1, threads=1, device="cuda", warmup=2, min_samples=5, min_run_time=0.0)
    assert res.device == "cuda" and res.n_samples >= 5
