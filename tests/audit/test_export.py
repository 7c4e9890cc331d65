"""The export check: TorchScript, torch.export and ONNX against eager, at two batch sizes."""

from __future__ import annotations

import sys

import pytest
import torch
import torchvision.models as tvm

from convdoctor.audit import audit
from convdoctor.audit.export import EXPORT_BATCH, EXPORT_RTOL, OTHER_BATCH
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


def _export(model: torch.nn.Module, x: torch.Tensor):
    return audit(model.eval(), x, checks=["export"])


def test_data_dependent_control_flow_gives_findings_not_a_crash() -> None:
    x = zoo.images(4, side=8).abs()
    x[EXPORT_BATCH] = -x[EXPORT_BATCH]  # the other-batch sample takes the other branch
    report = _export(zoo.Branchy(), x)
    record = report.check("export")
    assert record.status is CheckStatus.FAIL
    formats = record.evidence["formats"]
    assert formats["torch_export"]["status"] == "failed" and formats["onnx"]["status"] == "failed"
    by_format = {(f.where, f.code) for f in report.findings}
    assert ("torch_export", "EXPORT_FAILED") in by_format and ("onnx", "EXPORT_FAILED") in by_format
    # the trace recorded the x.mean() > 0 branch: on the negative sample it doubles what eager returns
    (mismatch,) = [f for f in report.findings if f.code == "EXPORT_MISMATCH"]
    assert mismatch.where == "torchscript" and mismatch.evidence["batch"] == OTHER_BATCH
    assert mismatch.evidence["max_rel_diff"] > EXPORT_RTOL
    assert formats["torchscript"]["tracer_warnings"]


def test_trace_mismatch_equals_eager_output_magnitude() -> None:
    model = zoo.Branchy().eval()
    x = zoo.images(4, side=8).abs()
    x[EXPORT_BATCH] = -x[EXPORT_BATCH]
    report = _export(model, x)
    (mismatch,) = [f for f in report.findings if f.code == "EXPORT_MISMATCH"]
    with torch.no_grad():
        eager = model(x[EXPORT_BATCH : EXPORT_BATCH + 1])  # y; the trace returns 2y
    assert mismatch.evidence["max_abs_diff"] == pytest.approx(float(eager.abs().max()), rel=1e-3)


def test_hard_coded_batch_is_a_fixed_batch_mismatch_in_every_format() -> None:
    report = _export(zoo.FixedBatch(), zoo.images(4, side=8))
    fixed = {f.where for f in report.findings if f.code == "EXPORT_MISMATCH" and f.evidence.get("fixed_batch")}
    assert fixed == {"torchscript", "torch_export", "onnx"}


def test_dict_output_exports_and_matches() -> None:
    report = _export(zoo.trained_like(zoo.DictBN()), zoo.images(4, side=8))
    record = report.check("export")
    assert record.status is CheckStatus.PASS, record.evidence
    assert {f["status"] for f in record.evidence["formats"].values()} == {"ok"}


def test_missing_onnx_is_skipped_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    report = audit(zoo.bn_net().eval(), zoo.images(4, side=8), checks=["export"])
    onnx = report.check("export").evidence["formats"]["onnx"]
    assert onnx["status"] == "skipped" and "pip install" in onnx["reason"]


def test_nondeterministic_model_is_not_compared() -> None:
    report = _export(zoo.HardDropout(), zoo.images(4, side=8))
    assert report.check("export").status is CheckStatus.SKIPPED
    assert not report.has("EXPORT_MISMATCH")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_models_export_cleanly(name: str) -> None:
    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None).eval()
    report = _export(model, torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    record = report.check("export")
    assert record.status is CheckStatus.PASS, record.evidence
    assert not report.findings
    for fmt, result in record.evidence["formats"].items():
        assert result["status"] == "ok", (fmt, result)
        for batch in (EXPORT_BATCH, OTHER_BATCH):
            assert result[f"batch_{batch}"]["max_rel_diff"] <= EXPORT_RTOL
