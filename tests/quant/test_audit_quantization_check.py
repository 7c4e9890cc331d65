"""The audit check ``quantization``, wired to quantize_int8, on the trained digits ResNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.audit import audit
from convdoctor.demo.digits import Split


def test_runs_on_real_samples_and_passes(resnet: nn.Module, digits: Split) -> None:
    x, y = digits.x_test[:128], digits.y_test[:128]
    digest, flags = state_dict_digest(resnet), training_flags(resnet)
    report = audit(resnet, x, targets=y, batch_sizes=(1, 8), checks="quantization")
    record = report.check("quantization")
    assert record.status.value == "pass", record.evidence
    ev = record.evidence
    assert ev["mode"] == "static-int8"
    assert ev["size_ratio"] <= 0.3  # bytes on disk after lowering, int8 over fp32
    assert ev["accuracy_drop_points"] <= 1.0
    assert not report.has("QUANTIZATION_DROP")
    assert state_dict_digest(resnet) == digest and training_flags(resnet) == flags


def test_skipped_without_real_data(resnet: nn.Module) -> None:
    report = audit(resnet, input_size=(1, 1, 32, 32), batch_sizes=(1,), checks="quantization")
    record = report.check("quantization")
    assert record.status.value == "skipped"
    assert "real samples" in str(record.evidence)


def test_dynamic_quantized_model_reports_fp32_share() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    ).eval()
    dyn = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    report = audit(dyn, input_size=(1, 1, 8, 8), batch_sizes=(1,), checks="quantization")
    ev = report.check("quantization").evidence
    assert ev["mode"] == "eager-quantized"
    conv = 8 * 8 * 16 * 1 * 9 + 8 * 8 * 16 * 16 * 9  # Hout*Wout*Cout*Cin*k*k, both convs stay fp32
    linear = 16 * 8 * 8 * 10
    assert report.has("QUANTIZATION_PARTIAL")
    assert abs(ev["fp32_mac_fraction"] - conv / (conv + linear)) < 1e-9


def test_skipped_with_install_hint_without_torchao(
    resnet: nn.Module, digits: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No torchao: the check is skipped with the install hint, not reported as crashed."""
    import builtins

    real_import = builtins.__import__

    def no_torchao(name: str, *args: object, **kwargs: object) -> object:
        if name == "torchao" or name.startswith("torchao."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_torchao)
    report = audit(resnet, digits.x_test[:16], targets=digits.y_test[:16], batch_sizes=(1,), checks="quantization")
    record = report.check("quantization")
    assert record.status.value == "skipped", record.evidence
    assert "pip install 'convdoctor[quant]'" in record.evidence["reason"]
