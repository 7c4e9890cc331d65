"""Machine peak probe: arithmetic of the rates, the roofline label, and the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from convdoctor.bench import probe as probe_mod
from convdoctor.bench.probe import COPY_BYTES, MATMUL_N, MachinePeaks, cache_dir, machine_peaks


def test_rates_from_probe_times(monkeypatch: pytest.MonkeyPatch) -> None:
    times = {"torch.mm(a, b, out=out)": 0.05, "dst.copy_(src)": 0.01}
    monkeypatch.setattr(probe_mod, "_best_seconds", lambda stmt, env, threads, device: times[stmt])
    gmacs, gbytes = probe_mod.probe("cpu", 1, torch.float32)
    # 1024^3 MACs in 50 ms; 64 MiB read + 64 MiB written in 10 ms.
    assert gmacs == pytest.approx(1024**3 / 0.05 / 1e9)
    assert gbytes == pytest.approx(2 * 64 * 2**20 / 0.01 / 1e9)
    assert MATMUL_N == 1024 and COPY_BYTES == 64 * 2**20


def test_ridge_and_bound() -> None:
    p = MachinePeaks(
        "cpu", "x", 1, "float32", gmacs_per_s=40.0, gbytes_per_s=20.0, torch_version="t", measured_at="now"
    )
    assert p.ridge == 2.0
    assert p.bound(1.9) == "memory-bound" and p.bound(2.0) == "compute-bound"
    assert p.attainable_gmacs(1.0) == 20.0 and p.attainable_gmacs(10.0) == 40.0
    assert p.to_dict()["ridge_macs_per_byte"] == 2.0


def test_cache_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVDOCTOR_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CONVDOCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "convdoctor"
    monkeypatch.setenv("CONVDOCTOR_CACHE_DIR", "off")
    assert cache_dir() is None


def test_cached_per_threads_and_refreshable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVDOCTOR_CACHE_DIR", str(tmp_path))
    calls: list[int] = []

    def fake(device: str, threads: int, dtype: torch.dtype) -> tuple[float, float]:
        calls.append(threads)
        return 10.0 * threads, 5.0

    monkeypatch.setattr(probe_mod, "probe", fake)
    first = machine_peaks("cpu", 1)
    again = machine_peaks("cpu", 1)
    other = machine_peaks("cpu", 2)
    fresh = machine_peaks("cpu", 1, refresh=True)
    assert calls == [1, 2, 1]
    assert not first.cached and again.cached and not other.cached and not fresh.cached
    assert again.gmacs_per_s == first.gmacs_per_s == 10.0 and other.gmacs_per_s == 20.0
    data = json.loads((tmp_path / "peaks.json").read_text())
    assert len(data) == 2 and all("threads=" in k for k in data)


def test_unwritable_cache_still_measures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("CONVDOCTOR_CACHE_DIR", str(blocker / "sub"))
    monkeypatch.setattr(probe_mod, "probe", lambda d, t, dt: (1.0, 1.0))
    assert machine_peaks("cpu", 1).gmacs_per_s == 1.0


def test_real_probe_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_mod, "PROBE_RUN_TIME", 0.02)
    gmacs, gbytes = probe_mod.probe("cpu", 1, torch.float32)
    assert gmacs > 0 and gbytes > 0
