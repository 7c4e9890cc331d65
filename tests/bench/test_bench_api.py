"""bench() and compare(): structure, the model left untouched, validation, cold start."""

from __future__ import annotations

import json

import pytest
import torch
from bench_helpers import BROKEN_SPEC, FAST, TINY_SPEC, tiny_cnn, tiny_macs
from torch import nn

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.bench import bench, compare
from convdoctor.errors import CaptureError, ModelLoadError, UsageError
from convdoctor.report import render

DESIGN_KEYS = {"model", "batch_size", "device", "threads", "p50_ms", "p90_ms", "p99_ms", "throughput", "cold_start_ms"}


def _no_cold(**kw):  # noqa: ANN003, ANN202
    return {**FAST, "cold_start": False, **kw}


def test_rows_per_batch_size_with_design_keys(tiny: nn.Module) -> None:
    report = bench(tiny, "1x3x16x16", batch_sizes="4,1", threads=1, **_no_cold())
    assert [r.batch_size for r in report.rows] == [1, 4]
    doc = json.loads(render(report, "json"))
    assert doc["kind"] == "bench" and doc["model"] == "Sequential"
    for row in doc["results"]:
        assert DESIGN_KEYS <= set(row)
        assert len(row["samples_ms"]) == row["n_samples"] >= FAST["min_samples"]
        assert len(row["warmup_ms"]) == FAST["warmup"]
        assert row["threads"] == 1
    assert doc["method"]["warmup"] == FAST["warmup"]


def test_figures_consistent_with_raw_samples_and_hand_macs(tiny: nn.Module) -> None:
    import numpy as np

    report = bench(tiny, "1x3x16x16", batch_sizes=(2,), threads=1, **_no_cold())
    row = report.rows[0]
    assert row.p50_ms == pytest.approx(np.percentile(row.samples_ms, 50))
    assert row.p99_ms == pytest.approx(np.percentile(row.samples_ms, 99))
    assert row.throughput == pytest.approx(2 / (row.p50_ms / 1e3))
    assert row.macs == tiny_macs(8, batch=2)
    assert row.params == sum(p.numel() for p in tiny.parameters())
    assert row.gmacs_per_s == pytest.approx(row.macs / row.p50_ms / 1e6)
    assert row.peak_mem_bytes is not None and row.peak_mem_bytes > 0
    assert {layer.name for layer in row.layers} <= {"0", "1", "2", "3", "4", "5", "6"}
    conv = next(layer for layer in row.layers if layer.name == "0")
    # traffic by hand: input 2x3x16x16, weight 8x3x3x3 (no bias), output 2x8x16x16, fp32
    conv_bytes = 4 * (2 * 3 * 16 * 16 + 8 * 27 + 2 * 8 * 16 * 16)
    assert conv.macs == 2 * 16 * 16 * 8 * 27 and conv.bytes == conv_bytes == 23_392
    assert conv.intensity == pytest.approx(conv.macs / conv_bytes)
    ridge = report.machine["ridge_macs_per_byte"]
    assert conv.bound == ("memory-bound" if conv.macs / conv_bytes < ridge else "compute-bound")


@pytest.mark.parametrize("ridge, label", [(1.0, "compute-bound"), (100.0, "memory-bound")])
def test_roofline_label_follows_the_ridge_point(
    tiny: nn.Module, monkeypatch: pytest.MonkeyPatch, ridge: float, label: str
) -> None:
    """The conv's intensity is 110,592 MACs / 23,392 B = 4.73 MACs/B: above a ridge of 1, below 100."""
    from convdoctor.bench import MachinePeaks, run

    peaks = MachinePeaks(
        "cpu",
        "fixed",
        1,
        "float32",
        gmacs_per_s=ridge,
        gbytes_per_s=1.0,
        torch_version=torch.__version__,
        measured_at="2026-01-01T00:00:00Z",
    )
    monkeypatch.setattr(run, "machine_peaks", lambda *a, **k: peaks)  # where _peaks looks it up
    row = bench(tiny, "1x3x16x16", batch_sizes=(2,), threads=1, **_no_cold()).rows[0]
    conv = next(layer for layer in row.layers if layer.name == "0")
    assert conv.bound == label


def test_model_left_untouched(tiny: nn.Module) -> None:
    tiny.train()
    tiny[1].eval()  # mixed flags must survive exactly
    digest, flags = state_dict_digest(tiny), training_flags(tiny)
    threads = torch.get_num_threads()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny.modules())
    other = 1 if threads != 1 else 2
    bench(tiny, "1x3x16x16", threads=other, **_no_cold())
    assert state_dict_digest(tiny) == digest  # BatchNorm stats not updated: the forward ran in eval
    assert training_flags(tiny) == flags
    assert torch.get_num_threads() == threads
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny.modules()) == hooks


def test_other_dtype_runs_a_copy(tiny: nn.Module) -> None:
    digest = state_dict_digest(tiny)
    report = bench(tiny, "1x3x16x16", dtype="bfloat16", threads=1, **_no_cold(profile=False))
    assert report.rows[0].dtype == "bfloat16"
    assert all(p.dtype == torch.float32 for p in tiny.parameters())
    assert state_dict_digest(tiny) == digest


def test_thread_count_recorded_default_is_current(tiny: nn.Module) -> None:
    report = bench(tiny, "1x3x16x16", **_no_cold(profile=False, probe=False))
    assert report.rows[0].threads == torch.get_num_threads()
    assert report.machine == {"reason": "not requested (probe=False)"}
    assert report.rows[0].bound is None


def test_module_cold_start_absent_with_reason(tiny: nn.Module) -> None:
    report = bench(tiny, "1x3x16x16", threads=1, **FAST, profile=False)
    row = report.rows[0]
    assert row.cold_start_ms is None and "MODEL spec" in (row.cold_start_reason or "")


@pytest.mark.slow
def test_spec_cold_start_in_fresh_process() -> None:
    report = bench(TINY_SPEC, "1x3x16x16", threads=1, **FAST, profile=False)
    row = report.rows[0]
    assert row.cold_start_reason is None, row.cold_start_reason
    phases = row.cold_start
    assert {"import_ms", "load_ms", "first_inference_ms", "second_inference_ms", "process_ms"} <= set(phases)
    assert row.cold_start_ms == pytest.approx(phases["load_ms"] + phases["first_inference_ms"])
    # the parent's wall time of the child contains every phase the child measured
    assert phases["process_ms"] > phases["load_ms"] + phases["first_inference_ms"] + phases["second_inference_ms"]
    assert row.first_call_ms == row.warmup_ms[0]


def test_cold_start_failure_is_a_reason_not_a_crash() -> None:
    from convdoctor.bench.cold import cold_start

    cold = cold_start(BROKEN_SPEC, (1, 3, 16, 16), threads=1)
    assert cold.cold_start_ms is None and "boom inside forward" in (cold.reason or "")


def test_compare_ratios_against_first_model() -> None:
    torch.manual_seed(0)
    models = {"small": tiny_cnn(4), "big": tiny_cnn(16)}
    report = compare(models, "1x3x16x16", batch_sizes=(1, 2), threads=1, **_no_cold(profile=False, probe=False))
    assert report.models == ["small", "big"]
    ratios = {(r.model, r.batch_size): r for r in report.ratios()}
    assert ratios[("small", 1)].macs_ratio == ratios[("small", 1)].p50_ratio == 1.0
    assert ratios[("big", 2)].macs_ratio == pytest.approx(tiny_macs(16) / tiny_macs(4))
    big, small = report.row("big", 2), report.row("small", 2)
    assert big is not None and small is not None
    assert ratios[("big", 2)].p50_ratio == pytest.approx(big.p50_ms / small.p50_ms)
    doc = report.to_dict()
    assert len(doc["comparison"]) == 4 and doc["model"] == "small vs big"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_sizes": 0}, "batch size 0"),
        ({"batch_sizes": "1,x"}, "not an integer"),
        ({"batch_sizes": ""}, "no batch size"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"threads": 0}, "threads must be a positive integer"),
        ({"dtype": "int8"}, "unsupported dtype"),
        ({"min_samples": 0}, "min_samples"),
        ({"warmup": -1}, "warmup"),
        ({"bogus": 1}, "unknown bench option"),
    ],
)
def test_bad_arguments_raise_usage_error_before_running(kwargs: dict, match: str) -> None:
    calls = []
    model = nn.Identity()
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(UsageError, match=match):
        bench(model, "1x3x8x8", **kwargs)
    assert calls == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_usage_error(tiny: nn.Module) -> None:
    with pytest.raises(UsageError, match="no CUDA GPU"):
        bench(tiny, "1x3x16x16", device="cuda")


def test_other_bad_inputs(tiny: nn.Module) -> None:
    with pytest.raises(UsageError, match="nn.Module or a MODEL spec"):
        bench(42)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="malformed input size"):
        bench(tiny, "1xx3")
    with pytest.raises(UsageError, match="at least one model"):
        compare({}, "1x3x16x16")
    with pytest.raises(ModelLoadError):
        bench("torchvision:not_a_model")


def test_failing_forward_is_one_line_capture_error() -> None:
    with pytest.raises(CaptureError, match="boom inside forward") as info:
        bench(BROKEN_SPEC, "1x3x16x16", **_no_cold(probe=False))
    assert "\n" not in str(info.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bench_leaves_model_on_cpu(tiny: nn.Module) -> None:
    report = bench(tiny, "1x3x16x16", device="cuda", **_no_cold())
    row = report.rows[0]
    assert row.device == "cuda" and row.peak_mem_bytes is not None
    assert all(p.device.type == "cpu" for p in tiny.parameters())


def test_torchscript_module_benches_without_module_times() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(tiny_cnn(8).eval())
    row = bench(scripted, "1x3x16x16", threads=1, **_no_cold()).rows[0]
    assert row.layers == () and any("TorchScript" in w for w in row.warnings)
    assert row.macs == tiny_macs(8) and row.peak_mem_bytes is not None
