"""device="cuda": the audit runs on a CUDA copy; the user's CPU model stays where it is."""

from __future__ import annotations

import pytest
import torch

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.audit import audit
from convdoctor.errors import UsageError
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


@pytest.mark.cuda
def test_cuda_audit_on_a_copy_finds_the_incident() -> None:
    model = zoo.trained_like(zoo.bn_net()).train()
    digest, flags = state_dict_digest(model), training_flags(model)
    report = audit(model, zoo.images(16), targets=torch.arange(16) % 4, device="cuda", batch_sizes=(1, 8))
    assert report.input["device"] == "cuda"
    assert report.has("BN_TRAIN_MODE") and report.has("BATCH_DEPENDENT_OUTPUT")
    assert report.check("determinism").status is CheckStatus.PASS
    # Export on CUDA: all three formats must export and run (ONNX on onnxruntime's CPU provider when
    # there is no CUDA one); the verdict is the one its own numbers imply. TF32 convolutions may
    # legitimately differ from a CPU artefact, so the rule is checked, not a fixed outcome.
    export = report.check("export")
    formats = export.evidence["formats"]
    assert set(formats) == {"torchscript", "torch_export", "onnx"}
    rel = [d["max_rel_diff"] for f in formats.values() for k, d in f.items() if k.startswith("batch_")]
    assert len(rel) == 6 and all(f["status"] in ("ok", "mismatch") for f in formats.values())
    worst = max(rel)
    assert export.status is (CheckStatus.PASS if worst <= export.evidence["rtol"] else CheckStatus.FAIL), worst
    assert (export.status is CheckStatus.FAIL) == report.has("EXPORT_MISMATCH")
    assert next(model.parameters()).device.type == "cpu"
    assert state_dict_digest(model) == digest and training_flags(model) == flags


@pytest.mark.cuda
def test_cuda_eval_model_passes() -> None:
    report = audit(zoo.trained_like(zoo.bn_net()).eval(), zoo.images(16), device="cuda", batch_sizes=(1, 8))
    errors = [f.code for f in report.findings if f.severity.value == "error"]
    assert not errors, report.findings


def test_cuda_request_without_a_device_is_a_usage_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UsageError, match="CUDA is not available"):
        audit(zoo.bn_net(), zoo.images(4), device="cuda")
