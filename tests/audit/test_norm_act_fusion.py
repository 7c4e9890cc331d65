"""Conv-BN folding through BatchNorm subclasses: timm's BatchNormAct2d keeps its activation."""

from __future__ import annotations

import pytest
import timm.layers as timm_layers  # a declared test dependency: a broken release fails
import torch
from torch import nn

from convdoctor import fix
from convdoctor._guard import state_dict_digest
from convdoctor.audit import audit
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


class NormActNet(nn.Module):
    """Two conv + BatchNormAct2d (SiLU) blocks, the way timm's EfficientNet/RegNet stems are built."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = timm_layers.BatchNormAct2d(8, act_layer=nn.SiLU)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, bias=False)
        self.bn2 = timm_layers.BatchNormAct2d(8, act_layer=nn.ReLU)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn2(self.conv2(self.bn1(self.conv1(x)))))


class ShiftBN(nn.BatchNorm2d):
    """A BatchNorm subclass that adds something after normalising (unknown to convdoctor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1.0


def _model() -> nn.Module:
    torch.manual_seed(0)
    return zoo.trained_like(NormActNet()).eval()


@pytest.mark.parametrize("with_input", [False, True], ids=["fx", "graph"])
def test_norm_act_layers_fold_and_keep_the_activation(with_input: bool) -> None:
    model = _model()
    x = torch.randn(2, 3, 16, 16)
    digest = state_dict_digest(model)
    fused = fix.fuse_conv_bn(model, x if with_input else None)
    assert state_dict_digest(model) == digest
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())  # both folded
    assert isinstance(fused.bn1[1], nn.SiLU) and isinstance(fused.bn2[1], nn.ReLU)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(fused(x), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_audit_and_fix_agree_on_norm_act_models() -> None:
    model = _model()
    report = audit(model, zoo.images(4, side=16), batch_sizes=(1, 2), checks=["fusion"])
    record = report.check("fusion")
    assert record.status is CheckStatus.PASS
    assert record.evidence["pairs"] == 2 == len(fix.find_conv_bn_pairs(model))
    assert not [f for f in report.findings if f.code == "FUSION_MISMATCH"]


def test_unknown_subclass_is_left_unfolded_with_a_reason() -> None:
    torch.manual_seed(0)
    model = zoo.trained_like(
        nn.Sequential(nn.Conv2d(3, 4, 3), ShiftBN(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    assert fix.find_conv_bn_pairs(model, x) == [("2", "3")]
    reasons = fix.fusion.unfoldable_batchnorms(model)
    assert list(reasons) == ["1"] and "overrides forward" in reasons["1"]
    fused = fix.fuse_conv_bn(model, x)
    assert isinstance(fused[1], ShiftBN)
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-5)
    record = audit(model, x, batch_sizes=(1, 2), checks=["fusion"]).check("fusion")
    assert record.status is CheckStatus.PASS and "1" in record.evidence["not_folded"]
    assert record.evidence["pairs"] == 1
