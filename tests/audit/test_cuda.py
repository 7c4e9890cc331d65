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
    assert report.check("export").status in (CheckStatus.PASS, CheckStatus.FAIL)
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
