"""convdoctor.fix.inference_mode, prepare_for_inference and recalibrate_bn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convdoctor import fix
from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.audit import audit
from convdoctor.errors import UsageError
from tests.audit import zoo


def _mixed() -> nn.Sequential:
    model = zoo.trained_like(zoo.bn_net()).train()
    model[5].eval()  # one submodule deliberately in eval
    return model


def test_inference_mode_restores_each_modules_own_flag() -> None:
    model = _mixed()
    flags = training_flags(model)
    with fix.inference_mode(model) as m:
        assert m is model and not any(x.training for x in model.modules())
        assert not torch.is_grad_enabled()
        m(zoo.images(2))
    assert training_flags(model) == flags and torch.is_grad_enabled()


def test_prepare_for_inference_returns_a_clean_copy_and_the_audit_agrees() -> None:
    model = _mixed()
    digest, flags = state_dict_digest(model), training_flags(model)
    ready = fix.prepare_for_inference(model, fuse=True)
    assert state_dict_digest(model) == digest and training_flags(model) == flags
    assert not any(m.training for m in ready.modules())
    assert not any(p.requires_grad for p in ready.parameters())
    before = audit(model, zoo.images(16), checks=["modes", "batch"])
    after = audit(ready, zoo.images(16), checks=["modes", "batch"])
    assert before.has("BN_TRAIN_MODE") and before.has("BATCH_DEPENDENT_OUTPUT")
    assert not after.findings


def test_recalibrate_bn_equals_the_batch_statistics() -> None:
    model = zoo.trained_like(zoo.bn_net())
    model[1].reset_running_stats()
    x = zoo.images(32)
    fresh = fix.recalibrate_bn(model, [x])
    # independent: the conv's output statistics over (N, H, W), unbiased variance
    with torch.no_grad():
        z = model[0](x)
    assert torch.allclose(fresh[1].running_mean, z.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(fresh[1].running_var, z.var(dim=(0, 2, 3), unbiased=True), atol=1e-4)
    assert fresh[1].momentum == model[1].momentum and not fresh.training
    assert int(model[1].num_batches_tracked) == 0  # the original keeps its reset stats
    assert not audit(fresh, x, checks=["bn_stats"]).findings


def test_recalibrate_bn_averages_batches_and_keeps_dropout_off() -> None:
    model = nn.Sequential(nn.Dropout(0.9), nn.BatchNorm1d(3))
    a, b = torch.randn(16, 3), torch.randn(16, 3) + 2
    fresh = fix.recalibrate_bn(model, [(a, None), (b, None)])
    expected = (a.mean(0) + b.mean(0)) / 2  # dropout off: the inputs reach BatchNorm unchanged
    assert torch.allclose(fresh[1].running_mean, expected, atol=1e-5)


def test_recalibrate_bn_needs_batches() -> None:
    with pytest.raises(UsageError, match="no batch"):
        fix.recalibrate_bn(zoo.bn_net(), [])
