"""compare_int8 latency and errors, quantize_dynamic coverage, quantization_findings thresholds."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.benchmark import Timer
from torch.utils.benchmark.utils.common import set_torch_threads

from convdoctor.demo.digits import Split
from convdoctor.errors import CaptureError, UsageError
from convdoctor.findings import FINDING_CODES, Severity
from convdoctor.quant import (
    MAX_ACCURACY_DROP_POINTS,
    MAX_DISAGREEMENT,
    MIN_FLIPS,
    QuantResult,
    compare_int8,
    dynamic_quant_coverage,
    load_int8,
    quantization_findings,
    quantization_metrics,
    quantize_int8,
)
from tests.quant import _independent as ind
from tests.quant.digits_resnet import DigitsResNet

quantize_dynamic_warnings = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _dynamic(model: nn.Module) -> nn.Module:
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


@quantize_dynamic_warnings
def test_quantize_dynamic_contrast(resnet: nn.Module, digits: Split, tmp_path: Path) -> None:
    dq = _dynamic(resnet)
    ind.saved_file(resnet, tmp_path / "fp32.pt")
    ind.saved_file(dq, tmp_path / "dyn.pt")
    # only the 96x10 head shrank: the file is essentially the fp32 one
    assert ind.file_bytes(tmp_path / "dyn.pt") / ind.file_bytes(tmp_path / "fp32.pt") > 0.95
    cov = dynamic_quant_coverage(dq, "1x1x32x32")
    x = digits.x_test[:1]
    assert cov["quantized_layers"] == {"fc": "Linear"} and cov["dynamic_only"]
    assert cov["int8_macs"] == 96 * 10  # batch 1: in_features x out_features
    assert cov["fp32_macs"] == ind.hooked_macs(resnet, x, (nn.Conv2d,))
    assert cov["fp32_mac_fraction"] > 0.99
    m = compare_int8(resnet, dq, digits.x_test, digits.y_test, latency=False)
    codes = [f.code for f in quantization_findings(m | cov)]
    assert codes == ["QUANTIZATION_PARTIAL"]
    partial = quantization_findings(cov)[0]
    assert partial.severity is Severity.WARNING and "quantize_int8" in partial.fix
    assert f"{100 * cov['fp32_mac_fraction']:.1f}%" in partial.message


def test_fp32_model_has_no_quantized_layers(resnet: nn.Module) -> None:
    cov = dynamic_quant_coverage(resnet, "1x1x32x32")
    assert cov["quantized_layers"] == {} and not cov["dynamic_only"] and cov["int8_macs"] == 0
    assert cov["fp32_macs"] == ind.hooked_macs(resnet, torch.zeros(1, 1, 32, 32), (nn.Conv2d, nn.Linear))
    assert quantization_findings(cov) == []


def test_static_int8_raises_nothing(resnet: nn.Module, int8: QuantResult, digits: Split) -> None:
    assert quantization_findings(compare_int8(resnet, int8.model, digits.x_test, digits.y_test, latency=False)) == []


def test_latency_rows_are_medians_of_real_calls(resnet: nn.Module, int8: QuantResult, digits: Split) -> None:
    m = compare_int8(resnet, int8.model, digits.x_test[:40], batch_sizes=(1, 8), threads=1, min_run_time=0.05)
    assert m["threads"] == 1 and set(m["latency"]) == {"1", "8"}
    for row in m["latency"].values():
        assert row["ratio"] == pytest.approx(row["int8_ms"] / row["fp32_ms"])
    assert all(row["int8_first_call_ms"] > 0 and row["fp32_first_call_ms"] > 0 for row in m["latency"].values())
    # int8 convs prepacked for x_shape=None (the dynamic-batch default) cost ~1 ms per call
    # each, 10-30x fp32 on this model; repacked for the real activation shape they are within
    # 1-3x. Fastest of interleaved calls: a busy machine inflates medians 10x, not minimums.
    x1 = digits.x_test[:1]
    fastest = {"fp32": float("inf"), "int8": float("inf")}
    with torch.no_grad(), set_torch_threads(1):
        for _ in range(30):
            for name, model in (("fp32", resnet), ("int8", int8.model)):
                start = time.perf_counter()
                model(x1)
                fastest[name] = min(fastest[name], time.perf_counter() - start)
    assert fastest["int8"] / fastest["fp32"] < 5
    # order of magnitude against torch's own timer (units, batch and model mix-ups; shared CPUs are noisy)
    x8 = digits.x_test[:8]
    with torch.no_grad():
        for name, model in (("fp32_ms", resnet), ("int8_ms", int8.model)):
            ref_ms = (
                Timer("m(x)", globals={"m": model, "x": x8}, num_threads=1).blocked_autorange(min_run_time=0.1).median
                * 1e3
            )
            assert ref_ms / 10 < m["latency"]["8"][name] < ref_ms * 10


DROP_CASES = [  # (metrics, expected codes)
    ({"n_samples": 1000, "flips": 5, "disagreement": 0.005}, []),
    ({"n_samples": 1000, "flips": 21, "disagreement": 0.021}, ["QUANTIZATION_DROP"]),
    ({"n_samples": 1000, "flips": 20, "disagreement": 0.020}, []),  # at the limit: not beyond it
    ({"n_samples": 50, "flips": 2, "disagreement": 0.04}, []),  # fewer than MIN_FLIPS changed predictions
    ({"n_samples": 50, "flips": 3, "disagreement": 0.06}, ["QUANTIZATION_DROP"]),
    (
        {
            "n_samples": 1000,
            "flips": 12,
            "disagreement": 0.012,
            "accuracy_fp32": 0.95,
            "accuracy_int8": 0.938,
            "accuracy_drop_points": 1.2,
        },
        ["QUANTIZATION_DROP"],
    ),
    (
        {
            "n_samples": 1000,
            "flips": 10,
            "disagreement": 0.010,
            "accuracy_fp32": 0.95,
            "accuracy_int8": 0.94,
            "accuracy_drop_points": 1.0,
        },
        [],
    ),
    (
        {
            "int8_macs": 960,
            "fp32_macs": 10**6,
            "fp32_mac_fraction": 0.999,
            "quantized_layers": {"fc": "Linear"},
            "dynamic_only": True,
        },
        ["QUANTIZATION_PARTIAL"],
    ),
    (
        {
            "int8_macs": 10**6,
            "fp32_macs": 960,
            "fp32_mac_fraction": 0.001,
            "quantized_layers": {"c": "Conv2d"},
            "dynamic_only": False,
        },
        [],
    ),
]


@pytest.mark.parametrize(("metrics", "codes"), DROP_CASES)
def test_quantization_findings_thresholds(metrics: dict, codes: list[str]) -> None:
    assert [f.code for f in quantization_findings(metrics)] == codes


def test_drop_finding_says_why_and_what_to_do() -> None:
    metrics = {
        "n_samples": 400,
        "flips": 40,
        "disagreement": 0.1,
        "accuracy_fp32": 0.97,
        "accuracy_int8": 0.9,
        "accuracy_drop_points": 7.0,
        "max_abs_error": 3.0,
    }
    (f,) = quantization_findings(metrics)
    assert f.severity is Severity.ERROR and f.where == "quantization"
    assert "7.00 points" in f.message and "40 of 400" in f.message
    assert f.evidence["max_accuracy_drop_points"] == MAX_ACCURACY_DROP_POINTS
    assert f.evidence["max_disagreement"] == MAX_DISAGREEMENT and "quantize_int8" in f.fix
    assert quantization_findings(metrics, max_accuracy_drop=10, max_disagreement=0.2) == []
    assert MIN_FLIPS == 3 and "QUANTIZATION_PARTIAL" in FINDING_CODES


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if float(y.sum()) > 0 else -y  # data-dependent: torch.export cannot trace it


def _tuple_out() -> nn.Module:
    class T(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.flatten(1), x.flatten(1)

    return T()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: quantize_int8(DigitsResNet(8), torch.rand(4, 1, 32, 32), backend="arm"),
            UsageError,
            "choose one of x86",
        ),
        (lambda: quantize_int8(DigitsResNet(8), torch.rand(0, 1, 32, 32)), UsageError, "calibration data is empty"),
        (
            lambda: quantize_int8(DigitsResNet(8), [torch.zeros(2, 1, 32, 32, dtype=torch.long)]),
            UsageError,
            "float tensors",
        ),
        (lambda: quantize_int8(DigitsResNet(8), 3), UsageError, "tensor or an iterable"),
        (lambda: quantize_int8(_Branchy(), torch.rand(4, 1, 8, 8)), CaptureError, "torch.export cannot trace"),
        (
            lambda: quantize_int8(DigitsResNet(8), [torch.rand(4, 1, 32, 32), torch.rand(4, 3, 32, 32)]),
            CaptureError,
            "calibration batch of shape",
        ),
        (lambda: compare_int8(_tuple_out(), _tuple_out(), torch.rand(4, 3)), UsageError, r"\(N, classes\)"),
        (
            lambda: compare_int8(
                nn.Flatten(), nn.Flatten(), torch.rand(4, 3), torch.zeros(3, dtype=torch.long), latency=False
            ),
            UsageError,
            "one label per input",
        ),
        (lambda: compare_int8(nn.Flatten(), nn.Flatten(), torch.rand(0, 3)), UsageError, "non-empty"),
        (lambda: load_int8("/nonexistent/int8.pt2", torch.rand(2, 1, 32, 32)), UsageError, "no such file"),
    ],
)
def test_bad_input_is_one_line_error(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.cuda
def test_compare_runs_each_model_on_its_device(resnet: nn.Module, int8: QuantResult, digits: Split) -> None:
    gpu = copy.deepcopy(resnet).cuda()
    m = compare_int8(gpu, int8.model, digits.x_test, digits.y_test, batch_sizes=(1,), min_run_time=0.05)
    assert m["flips"] == int((resnet(digits.x_test).argmax(1) != int8.model(digits.x_test).argmax(1)).sum())
    assert m["latency"]["1"]["fp32_ms"] > 0


@quantize_dynamic_warnings
def test_quantization_metrics_picks_the_mode(resnet: nn.Module, digits: Split) -> None:
    x, y = digits.x_test[:200], digits.y_test[:200]
    static = quantization_metrics(resnet, x, y, latency=False)
    assert static["mode"] == "static-int8" and static["n_samples"] == 100  # half calibrates, half is scored
    assert static["accuracy_fp32"] == pytest.approx(ind.accuracy(resnet, x[100:], y[100:]))
    assert {r["status"] for r in static["record"]["layers"]} == {"int8", "folded"}
    # agreement ran compiled, in forwards of 32: one package, on disk
    [package] = static["serving"]["packages"]
    assert static["serving"]["compiled"] and static["serving"]["note"] == ""
    assert package["shape"] == ((32, 1, 32, 32),) and Path(package["package"]).is_file()
    assert quantization_findings(static) == []
    eager = quantization_metrics(_dynamic(resnet), x, y)
    assert eager["mode"] == "eager-quantized" and eager["quantized_layers"] == {"fc": "Linear"}
    assert [f.code for f in quantization_findings(eager)] == ["QUANTIZATION_PARTIAL"]
    with pytest.raises(UsageError, match="at least 2 inputs"):
        quantization_metrics(resnet, x[:1])
