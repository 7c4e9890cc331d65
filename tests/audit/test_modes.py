"""The modes check: BatchNorm, dropout and any module whose own training flag changes its output."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from convdoctor.audit import audit
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


def _modes(model: nn.Module, x: torch.Tensor | None = None):
    return audit(model, x if x is not None else zoo.images(), checks=["modes"])


def test_bn_in_training_mode_is_reported_with_the_measured_eval_effect() -> None:
    model = zoo.trained_like(zoo.bn_net()).train()
    x = zoo.images()
    report = _modes(model, x)
    (f,) = [f for f in report.findings if f.code == "BN_TRAIN_MODE"]
    assert f.where == "1" and f.evidence["count"] == 1 and f.evidence["total"] == 1
    # independent: the same 4 samples through an eval copy and a train copy of the model
    with torch.no_grad():
        expected = (copy.deepcopy(model).train()(x[:4]) - copy.deepcopy(model).eval()(x[:4])).abs().max()
    assert f.evidence["max_abs_diff"] == pytest.approx(float(expected), rel=1e-3)
    assert report.check("modes").status is CheckStatus.FAIL


def test_active_dropout_is_reported() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 8), nn.Dropout(0.3), nn.Linear(8, 2)).eval()
    model[2].train()
    report = _modes(model)
    (f,) = [f for f in report.findings if f.code == "DROPOUT_TRAIN_MODE"]
    assert f.where == "2" and f.evidence["count"] == 1
    assert not report.has("BN_TRAIN_MODE")


def test_zero_probability_dropout_and_untracked_bn_are_not_mode_bugs() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Dropout(0.0)).train()
    report = _modes(model)
    assert not report.has("BN_TRAIN_MODE") and not report.has("DROPOUT_TRAIN_MODE")


def test_custom_module_branching_on_training_is_named() -> None:
    model = zoo.own_flag_net().train()
    report = _modes(model)
    (f,) = [f for f in report.findings if f.code == "TRAIN_MODE_DIFFERS"]
    assert f.where == "1" and f.evidence["modules"][0]["type"] == "OwnFlag"
    # its output doubles in training mode: the difference is exactly its eval output's magnitude
    with torch.no_grad():
        expected = model[0](zoo.images()[:4]).abs().max()
    assert f.evidence["modules"][0]["max_abs_diff"] == pytest.approx(float(expected), rel=1e-3)


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_per_sample_norms_in_training_mode_raise_nothing(kind: str) -> None:
    report = _modes(zoo.norm_net(kind).train())
    assert report.findings == () or all(f.code == "SYNTHETIC_DATA" for f in report.findings)
    assert report.check("modes").status is CheckStatus.PASS
    assert report.check("modes").evidence["eval_effect"]["max_abs_diff"] == 0.0


def test_eval_model_passes_without_running() -> None:
    report = _modes(zoo.bn_net().eval())
    record = report.check("modes")
    assert record.status is CheckStatus.PASS and record.evidence["training_modules"] == 0
