"""The user's model is never changed by an audit, even when a check raises midway."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from convdoctor._guard import state_dict_digest, training_flags
from convdoctor.audit import audit, registry
from convdoctor.audit.context import CheckContext
from convdoctor.results.audit import CheckStatus
from tests.audit import zoo


def _mixed_modes() -> nn.Module:
    """Trained-looking stats, BN in train mode, dropout in eval: flags differ per module."""
    model = nn.Sequential(zoo.trained_like(zoo.bn_net()), nn.Dropout(0.2))
    model.train()
    model[1].eval()
    model[0][5].eval()
    return model


def _snapshot(model: nn.Module) -> tuple[str, dict[str, bool], dict[str, torch.Tensor], int]:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return state_dict_digest(model), training_flags(model), copy.deepcopy(model.state_dict()), hooks


@pytest.mark.parametrize(
    "factory", [_mixed_modes, lambda: zoo.trained_like(zoo.bn_net()).eval()], ids=["mixed-modes", "eval"]
)
def test_full_audit_leaves_the_model_bitwise_identical(factory) -> None:
    model = factory()
    model.register_forward_hook(lambda *a: None)
    before = _snapshot(model)
    grad = torch.is_grad_enabled()
    audit(model, zoo.images(8), targets=torch.arange(8) % 4, batch_sizes=(1, 4))
    after = _snapshot(model)
    assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3]
    for name, t in before[2].items():  # and, independently of the digest, tensor by tensor
        assert torch.equal(model.state_dict()[name], t), name
    assert torch.is_grad_enabled() == grad


@pytest.fixture
def raising_check(monkeypatch: pytest.MonkeyPatch):
    """Register a check that flips every mode, scribbles on the buffers, adds a hook, then raises."""

    def vandal(ctx: CheckContext):
        ctx.model.train()
        ctx.model.register_forward_hook(lambda *a: None)
        with torch.no_grad():
            for b in ctx.model.buffers():
                b.add_(7)
            ctx.model(ctx.take(4))  # a training-mode forward: BatchNorm stats move too
        raise RuntimeError("check exploded halfway")

    monkeypatch.setitem(registry.CHECKS, "vandal", registry.CheckSpec("vandal", vandal, "test", ()))
    return "vandal"


@pytest.mark.parametrize(
    "factory",
    [_mixed_modes, lambda: zoo.trained_like(zoo.bn_net()).eval()],
    ids=["mixed-modes (snapshot)", "eval (in place)"],
)
def test_model_is_restored_when_a_check_raises(factory, raising_check: str) -> None:
    model = factory()
    before = _snapshot(model)
    report = audit(model, zoo.images(8), checks=[raising_check, "modes"])
    record = report.check(raising_check)
    assert record.status is CheckStatus.ERROR and "check exploded halfway" in record.evidence["error"]
    assert report.check("modes").status in (CheckStatus.PASS, CheckStatus.FAIL)  # later checks still ran
    after = _snapshot(model)
    assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3]


def test_a_usage_error_midway_leaves_the_model_as_found() -> None:
    model = _mixed_modes()
    before = _snapshot(model)
    with pytest.raises(Exception, match="labels out of range"):
        audit(model, zoo.images(8), targets=torch.full((8,), 9))
    assert _snapshot(model)[:2] == before[:2]


def test_state_dict_digest_hashes_every_byte_without_copying_them() -> None:
    """The digest reads each tensor's buffer in place; it must equal SHA-256 over the bytes themselves."""
    import hashlib

    model = zoo.trained_like(zoo.bn_net())
    expected = hashlib.sha256()
    for name, t in model.state_dict(keep_vars=True).items():
        expected.update(f"{name}:{t.dtype}:{tuple(t.shape)}:{t.device.type}".encode())
        if t.numel():
            expected.update(bytes(t.detach().contiguous().reshape(-1).view(torch.uint8).tolist()))
    assert state_dict_digest(model) == expected.hexdigest()
    with torch.no_grad():  # one flipped bit anywhere changes it
        w = model[0].weight.view(-1)
        w[0] = torch.tensor(w[0].item()).view(torch.int32).bitwise_xor(1).view(torch.float32)
    assert state_dict_digest(model) != expected.hexdigest()
