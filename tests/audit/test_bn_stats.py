"""The bn_stats check: never-updated, invalid and float16-overflowing running statistics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from convdoctor.audit import audit
from convdoctor.audit.bn_stats import EXTREME_STAT
from convdoctor.findings import Severity
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


def _stats(model: nn.Module):
    return audit(model.eval(), zoo.images(), checks=["bn_stats"])


def _bn(model: nn.Module) -> nn.BatchNorm2d:
    return model[1]


def test_layer_that_counted_batches_but_holds_reset_statistics_is_an_error() -> None:
    model = zoo.trained_like(zoo.bn_net())
    with torch.no_grad():  # the statistics were overwritten after training; the counter says 100 batches
        _bn(model).running_mean.zero_()
        _bn(model).running_var.fill_(1.0)
    report = _stats(model)
    (f,) = report.findings
    assert f.code == "BN_STATS_UNINITIALIZED" and f.severity is Severity.ERROR and f.where == "1"
    assert f.evidence["layers"][0]["num_batches_tracked"] == 100
    assert f.evidence["evidence"] == "num_batches_tracked > 0"
    assert "recalibrate_bn" in f.fix


def test_reset_statistics_without_a_counted_batch_are_graded_by_the_rest_of_the_model() -> None:
    model = zoo.trained_like(zoo.bn_net())
    _bn(model).reset_running_stats()  # buffers lost (counter 0 too); gamma/beta differ per channel
    (f,) = _stats(model).findings  # the only layer: fresh init and lost buffers look the same
    assert f.severity is Severity.INFO and f.evidence["learned_affine"] == 1
    two = nn.Sequential(zoo.trained_like(zoo.bn_net()), nn.Unflatten(1, (4, 1, 1)), zoo.trained_like(nn.BatchNorm2d(4)))
    two[2].reset_running_stats()  # the first BatchNorm's statistics moved: this one lost its buffers
    (f,) = _stats(two).findings
    assert f.severity is Severity.WARNING and f.where == "2" and f.evidence["learned_affine"] == 1


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_constant_affine_from_an_initialiser_is_no_evidence_of_training(value: float) -> None:
    """Zero-init of the last BN of a residual block (timm repvgg/resnest/regnet, torchvision)."""
    model = zoo.bn_net()
    nn.init.constant_(_bn(model).weight, value)
    nn.init.constant_(_bn(model).bias, value / 2)
    (f,) = _stats(model).findings
    assert f.severity is Severity.INFO and f.evidence["untrained_model"] is True


@pytest.mark.parametrize("name", ["repvgg_a0", "resnest14d", "regnety_016"])
def test_freshly_built_timm_models_are_untrained_not_broken(name: str) -> None:
    import timm  # a declared test dependency: a broken release fails, never skips

    model = timm.create_model(name, pretrained=False).eval()
    report = audit(model, input_size="1x3x32x32", batch_sizes=(1,), checks=["bn_stats"])
    codes = [(f.code, f.severity) for f in report.findings if f.code.startswith("BN_")]
    assert codes == [("BN_STATS_UNINITIALIZED", Severity.INFO)]


def test_random_init_model_is_only_an_info() -> None:
    report = _stats(zoo.bn_net())
    (f,) = report.findings
    assert f.code == "BN_STATS_UNINITIALIZED" and f.severity is Severity.INFO
    assert f.evidence["untrained_model"] is True
    assert report.check("bn_stats").status is CheckStatus.PASS


def test_one_untrained_layer_among_trained_ones_is_a_warning() -> None:
    model = nn.Sequential(zoo.trained_like(zoo.bn_net()), nn.Unflatten(1, (4, 1, 1)), nn.BatchNorm2d(4))
    report = _stats(model)
    (f,) = report.findings
    assert f.severity is Severity.WARNING and f.where == "2"


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.5])
def test_nan_inf_or_negative_variance_is_invalid(value: float) -> None:
    model = zoo.trained_like(zoo.bn_net())
    with torch.no_grad():
        _bn(model).running_var[3] = value
    report = _stats(model)
    (f,) = [f for f in report.findings if f.code == "BN_STATS_INVALID"]
    assert f.where == "1" and f.evidence["count"] == 1


def test_statistics_beyond_float16_are_extreme_and_the_numbers_match_the_buffer() -> None:
    model = zoo.trained_like(zoo.bn_net())
    with torch.no_grad():
        _bn(model).running_var[2] = 1e6
    report = _stats(model)
    (f,) = report.findings
    assert f.code == "BN_STATS_EXTREME" and f.severity is Severity.WARNING
    layer = f.evidence["layers"][0]
    assert layer["var_max"] == float(_bn(model).running_var.max()) > EXTREME_STAT
    assert layer["var_min"] == pytest.approx(float(_bn(model).running_var.min()))
    # the premise: model.half() really turns that buffer into inf
    assert torch.isinf(_bn(model).running_var.half()).any()


def test_trained_statistics_pass() -> None:
    report = _stats(zoo.trained_like(zoo.bn_net()))
    assert report.findings == ()
    assert report.check("bn_stats").evidence == {"layers": 1, "never_updated": 0, "invalid": 0}


def test_model_without_batchnorm_is_skipped() -> None:
    report = _stats(zoo.norm_net("group"))
    assert report.check("bn_stats").status is CheckStatus.SKIPPED
