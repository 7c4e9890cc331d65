"""Bench findings, table-driven on synthetic rows; rendering and the PNG plot."""

from __future__ import annotations

import sys

import pytest
from bench_helpers import make_report, make_row

from convdoctor.bench import _findings
from convdoctor.bench._findings import COLD_START_FACTOR, MACS_LATENCY_GAP
from convdoctor.bench.timing import NOISY_REL_IQR
from convdoctor.findings import FINDING_CODES
from convdoctor.report import render
from convdoctor.report.plot import latency_plot
from convdoctor.results.bench import LayerTiming


def test_codes_registered() -> None:
    for code in ("BENCH_NOISY", "COLD_START_SLOW", "MACS_NOT_LATENCY"):
        assert "bench" in FINDING_CODES[code].raised_by


@pytest.mark.parametrize(("rel_iqr", "raised"), [(0.05, False), (NOISY_REL_IQR, False), (0.11, True), (0.5, True)])
def test_bench_noisy(rel_iqr: float, raised: bool) -> None:
    f = _findings.noisy(make_row(rel_iqr=rel_iqr, iqr_ms=rel_iqr * 10))
    assert (f is not None) == raised
    if f is not None:
        assert f.code == "BENCH_NOISY" and f.evidence["rel_iqr"] == rel_iqr and f.where == "a@1"


@pytest.mark.parametrize(
    ("row", "raised", "source"),
    [
        # fresh-process first inference is used when measured
        (dict(cold_start_ms=500.0, cold_start={"first_inference_ms": 35.0}, first_call_ms=11.0), True, "fresh"),
        (dict(cold_start_ms=500.0, cold_start={"first_inference_ms": 25.0}, first_call_ms=90.0), False, None),
        # otherwise the in-process first call
        (dict(first_call_ms=COLD_START_FACTOR * 10.0), True, "this process"),
        (dict(first_call_ms=29.0), False, None),
        (dict(first_call_ms=None, warmup_ms=()), False, None),
    ],
)
def test_cold_start_slow(row: dict, raised: bool, source: str | None) -> None:
    f = _findings.cold_start_slow(make_row(p50_ms=10.0, **row))
    assert (f is not None) == raised
    if f is not None:
        assert source in f.evidence["source"] and "convdoctor.fix.warmup" in f.fix


def _pair(macs_b: int, p50_b: float, bs: int = 1) -> list:
    return [
        make_row(model="a", batch_size=bs, macs=1000, p50_ms=10.0),
        make_row(model="b", batch_size=bs, macs=macs_b, p50_ms=p50_b, memory_bound_share=0.7),
    ]


@pytest.mark.parametrize(
    ("macs_b", "p50_b", "raised"),
    [
        (170, 6.0, True),  # 0.17x the MACs, 0.6x the time: 3.5x slower per MAC
        (170, 1.7, False),  # latency follows MACs
        (500, 9.99, False),  # gap 1.998 < 2
        (500, 10.0, True),  # gap exactly 2
        (2000, 50.0, False),  # more MACs: not this finding's question
        (None, 50.0, False),  # MACs unknown: no claim
    ],
)
def test_macs_not_latency(macs_b: int | None, p50_b: float, raised: bool) -> None:
    found = _findings.macs_not_latency(make_report(*_pair(macs_b, p50_b)))  # type: ignore[arg-type]
    assert bool(found) == raised
    if found:
        f = found[0]
        assert f.where == "b@1" and f.evidence["per_mac_gap"] >= MACS_LATENCY_GAP
        assert f.evidence["macs_ratio"] == pytest.approx(macs_b / 1000)
        assert f.evidence["memory_bound_share"] == 0.7


def _report():  # noqa: ANN202
    layer = LayerTiming("features.1", "Conv2d", 1.234, 0.4, 5_000_000, 1_000_000, 4.05, 5.0, "compute-bound")
    rows = [*_pair(170, 6.0), *_pair(170, 40.0, bs=8)]
    rows[1] = make_row(model="b", batch_size=1, macs=170, p50_ms=6.0, layers=(layer,))
    return make_report(*rows)


def test_terminal_render_shows_ratios_and_rows() -> None:
    report = _report()
    text = render(report, "terminal", width=200)
    assert "Comparison (ratios to a" in text
    assert "0.17" in text and "0.60" in text  # the MACs ratio next to the latency ratio
    assert text.count("10.00") >= 2  # the reference p50 in both tables
    single = make_report(make_row(model="only", layers=report.rows[1].layers))
    text1 = render(single, "terminal", width=200)
    assert "Where the time goes" in text1 and "features.1" in text1 and "1.234" in text1


def test_json_has_comparison_and_machine() -> None:
    doc = _report().to_dict()
    assert doc["kind"] == "bench" and len(doc["results"]) == 4
    assert {c["model"] for c in doc["comparison"]} == {"a", "b"}
    b8 = next(c for c in doc["comparison"] if c["model"] == "b" and c["batch_size"] == 8)
    assert b8["p50_ratio"] == pytest.approx(4.0) and b8["macs_ratio"] == pytest.approx(0.17)


def test_latency_plot_is_png_without_pyplot() -> None:
    had_pyplot = "matplotlib.pyplot" in sys.modules
    png = latency_plot(_report())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot  # no global backend switched


def test_html_section_embeds_plot_and_tables() -> None:
    page = render(_report(), "html")
    assert page.count("data:image/png;base64,") == 1
    assert "Ratios to a" in page and "10.00" in page and "6.00" in page
    single = render(make_report(make_row(model="only", layers=_report().rows[1].layers)), "html")
    assert "Where the time goes" in single and "features.1" in single
