"""No false alarm from the sample's BatchNorm verdict: fresh timm and torchvision classifiers.

Each model, at random init and in eval mode, holds the initial statistics in every BatchNorm
layer, so ``bn_stats`` recomputes them on the sample (16 random 64x64 images, the fewest that
exercise the no-target path) and compares, with random targets and without. A fresh model's
recomputed predictions are neither right more often nor confident: the finding must stay ``info``.
"""

from __future__ import annotations

import pytest
import torch

from convdoctor.audit import audit
from convdoctor.audit.bn_recalibration import BN_MIN_SAMPLES
from convdoctor.findings import Severity

TORCHVISION = [
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "vgg11_bn",
    "densenet121",
    "googlenet",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "mnasnet0_5",
    "mnasnet1_0",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
    "efficientnet_b1",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "squeezenet1_1",  # no BatchNorm: nothing to recompute, the check is skipped
    "alexnet",  # no BatchNorm either
    "resnet34",
]
TIMM = [
    "resnet18",
    "resnetv2_50",
    "efficientnet_b0",
    "mobilenetv3_small_100",
    "mobilenetv2_100",
    "regnetx_002",
    "regnety_002",
    "repvgg_a0",  # draws BatchNorm gamma at random: per-channel affine values like a trained model's
    "densenet121",
    "ghostnet_100",
    "dla34",
    "cspresnet50",
    "rexnet_100",
    "lcnet_050",
    "hrnet_w18_small",
]
N = BN_MIN_SAMPLES


def _build(source: str, name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False).eval()
    import torchvision.models as tvm

    return tvm.get_model(name, weights=None).eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "name"), [("torchvision", n) for n in TORCHVISION] + [("timm", n) for n in TIMM], ids=lambda v: v
)
def test_fresh_classifier_is_not_an_error(source: str, name: str) -> None:
    model = _build(source, name)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, 64, 64, generator=gen)
    y = torch.randint(0, 1000, (N,), generator=gen)
    has_bn = any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in model.modules())
    for targets in (y, None):
        report = audit(model, x, targets=targets, checks="bn_stats")
        errors = [f"{f.code}: {f.message}" for f in report.findings if f.severity is Severity.ERROR]
        assert not errors, errors
        if has_bn:  # the verdict was computed, and was not proof
            (f,) = [f for f in report.findings if f.code == "BN_STATS_UNINITIALIZED"]
            assert f.severity is Severity.INFO and f.evidence["recalibration"]["samples"] == N


def test_the_sweep_is_as_large_as_promised() -> None:
    assert len(TORCHVISION) == 20 and len(TIMM) == 15
