"""convdoctor.fix.fuse_conv_bn and the audit's fusion check."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from convdoctor import fix
from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.audit import audit
from convdoctor.audit import fusion as fusion_check
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return zoo.trained_like(tvm.resnet18(num_classes=10)).train()


def test_resnet18_folds_all_20_pairs_and_matches_eval_outputs() -> None:
    model = _resnet()
    digest, flags = state_dict_digest(model), training_flags(model)
    x = torch.randn(2, 3, 64, 64)
    fused = fix.fuse_conv_bn(model)
    assert state_dict_digest(model) == digest and training_flags(model) == flags  # input untouched
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) == 0
    assert sum(isinstance(m, nn.Identity) for m in fused.modules()) == 20
    assert not fused.training
    with torch.no_grad():
        ref = copy.deepcopy(model).eval()(x)
        assert torch.allclose(fused(x), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_graph_and_fx_find_the_same_pairs() -> None:
    model = _resnet()
    from_fx = fix.find_conv_bn_pairs(model)
    from_graph = fix.find_conv_bn_pairs(model, example_input=torch.randn(1, 3, 32, 32))
    assert sorted(from_fx) == sorted(from_graph)
    assert ("conv1", "bn1") in from_fx and ("layer1.0.conv2", "layer1.0.bn2") in from_fx
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in from_fx


class SharedOutput(nn.Module):
    """The conv's output feeds the BatchNorm and a skip connection: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_conv_output_read_twice_is_not_folded() -> None:
    model = zoo.trained_like(SharedOutput()).eval()
    assert fix.find_conv_bn_pairs(model) == []
    assert fix.find_conv_bn_pairs(model, example_input=torch.randn(1, 3, 8, 8)) == []


def test_pairs_from_a_graph_at_another_batch_on_meta_are_the_pairs_of_the_call() -> None:
    from convdoctor.capture.trace import capture

    model = _resnet().eval()
    graph = capture(copy.deepcopy(model).to("meta"), (torch.empty(1, 3, 32, 32, device="meta"),))
    x = torch.randn(4, 3, 32, 32)
    assert fix.find_conv_bn_pairs(model, graph=graph) == fix.find_conv_bn_pairs(model, example_input=x)
    assert len(fix.find_conv_bn_pairs(model, graph=graph)) == 20


def test_given_pairs_are_checked_again_before_folding() -> None:
    model = zoo.trained_like(SharedOutput()).eval()
    fused = fix.fuse_conv_bn(model, pairs=[("bn", "conv"), ("nope", "bn")])  # not a conv-BN pair, no module
    assert isinstance(fused.bn, nn.BatchNorm2d) and isinstance(fused.conv, nn.Conv2d)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(fused(x), model(x))
    resnet = _resnet().eval()
    pairs = fix.find_conv_bn_pairs(resnet)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fix.fuse_conv_bn(resnet, pairs=pairs[:3]).modules()) == 17


class BranchyBN(nn.Module):
    """Data-dependent control flow (fx cannot trace) around a Sequential conv-BN block."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y * 2 if x.mean() > 0 else y


def test_untraceable_model_falls_back_to_sequential_order() -> None:
    model = zoo.trained_like(BranchyBN()).eval()
    assert fix.find_conv_bn_pairs(model) == [("block.0", "block.1")]
    x = torch.randn(2, 3, 8, 8).abs()
    with torch.no_grad():
        assert torch.allclose(fix.fuse_conv_bn(model)(x), model(x), atol=1e-5)


def test_transposed_conv_is_folded_exactly() -> None:
    model = zoo.trained_like(nn.Sequential(nn.ConvTranspose2d(3, 5, 3, stride=2), nn.BatchNorm2d(5))).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(fix.fuse_conv_bn(model)(x), model(x), atol=1e-5)


def test_fusion_check_passes_and_reports_pairs() -> None:
    model = zoo.trained_like(zoo.bn_net()).eval()
    record = audit(model, zoo.images(), checks=["fusion"]).check("fusion")
    assert record.status is CheckStatus.PASS and record.evidence["pairs"] == 1
    assert record.evidence["max_rel_diff"] <= fusion_check.FUSION_RTOL


def test_fusion_check_flags_a_fold_that_changes_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_fuse(model: nn.Module, example_input=None, *, pairs=None) -> nn.Module:
        broken = copy.deepcopy(model).eval()
        with torch.no_grad():
            broken[0].weight.mul_(1.5)  # a wrong scale, as a buggy fold would produce
        return broken

    monkeypatch.setattr(fusion_check, "fuse_conv_bn", bad_fuse)
    report = audit(zoo.trained_like(zoo.bn_net()).eval(), zoo.images(), checks=["fusion"])
    (f,) = report.findings
    assert f.code == "FUSION_MISMATCH" and f.evidence["max_rel_diff"] > fusion_check.FUSION_RTOL


def test_fusion_check_skips_models_without_batchnorm() -> None:
    record = audit(zoo.norm_net("group").eval(), zoo.images(), checks=["fusion"]).check("fusion")
    assert record.status is CheckStatus.SKIPPED
