"""The monitor's remedies in convdoctor.fix, each checked against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from convdoctor._guard import state_dict_digest
from convdoctor.errors import UsageError
from convdoctor.fix import GradAccumulator, freeze_bn, leaky_relu, param_groups, reinit, suggest_clip_norm, suggest_lr
from convdoctor.fix.bn import is_bn_frozen


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))


def test_freeze_bn_survives_model_train() -> None:
    model = bn_net()
    with torch.no_grad():  # give the running stats something other than the defaults
        model.train()
        model(torch.randn(16, 1, 6, 6) * 3 + 1)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    assert freeze_bn(model) == ["1"] and freeze_bn(model) == ["1"]  # idempotent
    assert len(model[1]._forward_pre_hooks) == 1 and is_bn_frozen(model[1])
    model.train()  # what every training loop does each epoch
    x = torch.randn(8, 1, 6, 6)
    out = model(x)
    assert not model[1].training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())  # running stats untouched
    assert not any(p.requires_grad for p in model[1].parameters())
    # the output is what eval-mode BN computes from the running stats, by hand:
    bn = model[1]
    h = model[0](x)
    hand = (h - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps)
    hand = hand * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    torch.testing.assert_close(out, model[4](F.relu(hand).flatten(1)))


def test_freeze_bn_without_batchnorm_is_an_error() -> None:
    with pytest.raises(UsageError, match="no BatchNorm"):
        freeze_bn(nn.Linear(2, 2))


def test_param_groups_split_head_and_backbone() -> None:
    model = bn_net()
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, "4", lr=0.01, head_lr_mult=10, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)] and all(g["weight_decay"] == 1e-4 for g in groups)
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[1] == {id(model[4].weight), id(model[4].bias)}
    assert ids[0] == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}  # frozen weight left out
    torch.optim.SGD(groups, momentum=0.9)  # a valid optimizer spec
    with pytest.raises(UsageError, match="no submodule 'fc'"):
        param_groups(model, "fc", lr=0.01)
    with pytest.raises(UsageError, match="not parameters of the model"):
        param_groups(model, nn.Linear(2, 2), lr=0.01)


def test_grad_accumulator_equals_the_full_batch_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    full = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves weights, we read grads
    acc = GradAccumulator(opt, steps=4)
    stepped = []
    for xb, yb in zip(x.split(3), y.split(3)):
        acc.backward(F.cross_entropy(model(xb), yb))
        if acc.ready:
            for p, g in zip(model.parameters(), full):
                torch.testing.assert_close(p.grad, g)
        stepped.append(acc.step())
    assert stepped == [False, False, False, True] and all(p.grad is None for p in model.parameters())
    acc.load_state_dict({"steps": 4, "count": 2})
    assert acc.state_dict() == {"steps": 4, "count": 2}
    with pytest.raises(UsageError):
        GradAccumulator(opt, steps=0)


def test_leaky_relu_returns_a_new_model() -> None:
    model = bn_net().eval()
    digest = state_dict_digest(model)
    new = leaky_relu(model, 0.1)
    assert isinstance(new[2], nn.LeakyReLU) and new[2].negative_slope == 0.1 and isinstance(model[2], nn.ReLU)
    assert state_dict_digest(model) == digest
    x = torch.randn(4, 1, 6, 6)
    h = model[1](model[0](x))
    torch.testing.assert_close(new(x), model[4](torch.where(h > 0, h, 0.1 * h).flatten(1)))
    with pytest.raises(UsageError, match="F.leaky_relu"):
        leaky_relu(nn.Linear(2, 2))


@pytest.mark.parametrize(("scheme", "nonlinearity"), [("kaiming", "relu"), ("xavier", "tanh")])
def test_reinit_matches_the_published_standard_deviation(scheme: str, nonlinearity: str) -> None:
    model = nn.Sequential(nn.Conv2d(64, 128, 3), nn.BatchNorm2d(128), nn.Linear(256, 512))
    with torch.no_grad():
        model[1].weight.fill_(3.0)
    digest = state_dict_digest(model)
    new = reinit(model, scheme, nonlinearity=nonlinearity, seed=0)
    assert state_dict_digest(model) == digest
    conv, lin = new[0].weight, new[2].weight
    if scheme == "kaiming":  # He et al.: std = sqrt(2 / fan_out), fan_out = out_channels * k * k
        expected = [math.sqrt(2 / (128 * 9)), math.sqrt(2 / 512)]
    else:  # Glorot: std = gain * sqrt(2 / (fan_in + fan_out)), gain(tanh) = 5/3
        expected = [5 / 3 * math.sqrt(2 / (64 * 9 + 128 * 9)), 5 / 3 * math.sqrt(2 / (256 + 512))]
    assert [float(conv.detach().std()), float(lin.detach().std())] == pytest.approx(expected, rel=0.02)
    assert float(new[0].bias.abs().max()) == 0 and float(new[1].weight.min()) == 1.0
    assert torch.equal(reinit(model, scheme, nonlinearity=nonlinearity, seed=0)[0].weight, conv)
    with pytest.raises(UsageError, match="schemes: kaiming, xavier"):
        reinit(model, "orthogonal")


def test_suggestions() -> None:
    assert suggest_lr(0.1, update_ratio=0.05) == pytest.approx(0.002)  # 0.1 * 1e-3 / 0.05
    assert suggest_lr(0.3) == pytest.approx(0.03)
    assert suggest_lr(0.5, cut=math.sqrt(10)) == pytest.approx(0.16)  # 0.158 to two digits
    assert suggest_clip_norm([3.0, 1.0, float("nan"), 2.0, float("inf")]) == 2.0
    assert suggest_clip_norm([]) == 1.0
