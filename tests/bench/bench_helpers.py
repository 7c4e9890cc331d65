"""Helpers for the bench tests: tiny models (also loadable as MODEL specs) and synthetic rows.

``TINY_SPEC`` is ``<this file>:tiny_cnn``, so the cold-start child and the CLI load the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from convdoctor.results.bench import BenchReport, BenchRow

TINY_SPEC = f"{Path(__file__).resolve()}:tiny_cnn"
BROKEN_SPEC = f"{Path(__file__).resolve()}:broken"

#: Options that make a bench row take a fraction of a second on a tiny model.
FAST: dict[str, Any] = {"warmup": 2, "min_samples": 5, "min_run_time": 0.0, "max_run_time": 5.0}


def tiny_cnn(channels: int = 8) -> nn.Module:
    """Conv(3->channels, 3x3, pad 1, no bias) -> BN -> ReLU -> Dropout -> global pool -> Linear(channels->10).

    MACs per sample at 3x16x16: conv 16*16 outputs * channels * 3*3*3 taps, plus linear
    channels * 10 (see :func:`tiny_macs`).
    """
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 10),
    )


def tiny_macs(channels: int, batch: int = 1, hw: int = 16) -> int:
    """Hand arithmetic of :func:`tiny_cnn`'s MACs: ``batch * (hw*hw*channels*27 + channels*10)``."""
    return batch * (hw * hw * channels * 3 * 3 * 3 + channels * 10)


class _Broken(nn.Module):
    def forward(self, x: Any) -> Any:
        raise RuntimeError("boom inside forward")


def broken() -> nn.Module:
    """A model whose forward always raises."""
    return _Broken()


def make_row(**kw: Any) -> BenchRow:
    """A synthetic row with round figures; keyword arguments override them."""
    base: dict[str, Any] = dict(
        model="a",
        batch_size=1,
        device="cpu",
        threads=1,
        dtype="float32",
        p50_ms=10.0,
        p90_ms=12.0,
        p99_ms=15.0,
        mean_ms=10.5,
        iqr_ms=0.5,
        rel_iqr=0.05,
        throughput=100.0,
        n_samples=100,
        samples_ms=(10.0,) * 100,
        warmup_ms=(20.0, 11.0),
        first_call_ms=20.0,
        macs=1_000_000_000,
        params=1_000_000,
    )
    base.update(kw)
    return BenchRow(**base)


def make_report(*rows: BenchRow) -> BenchReport:
    """A synthetic report over the given rows."""
    return BenchReport(model=" vs ".join(dict.fromkeys(r.model for r in rows)), rows=rows)
