"""Principle 3: inspect leaves the user's model exactly as it found it."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm

from convdoctor._guard import preserve_model_state, state_dict_digest, training_flags
from convdoctor.inspect import inspect
from tests.fixtures import models as Z


def _mixed_modes(model: torch.nn.Module) -> torch.nn.Module:
    model.train()
    for i, m in enumerate(model.modules()):
        if i % 3 == 0:
            m.eval()  # a mix the root's train()/eval() could never restore
    return model


@pytest.mark.parametrize(
    "factory, shape",
    [
        (lambda: tvm.resnet18(), (1, 3, 64, 64)),
        (Z.WithDropout, (2, 3, 6, 6)),
        (Z.DataDependent, (1, 3, 6, 6)),
        (Z.FrozenBackbone, (1, 3, 4, 4)),
    ],
)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_state_dict_and_flags_unchanged(factory, shape, mode: str) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = _mixed_modes(factory())
    digest, flags = state_dict_digest(model), training_flags(model)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    inspect(model, shape, mode=mode)
    assert state_dict_digest(model) == digest
    assert training_flags(model) == flags
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks


def test_guard_restores_after_an_exception() -> None:
    model = _mixed_modes(Z.WithDropout())
    flags = training_flags(model)
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), preserve_model_state(model):
        model.eval()
        torch.set_num_threads(threads + 1)
        raise RuntimeError("boom")
    assert training_flags(model) == flags
    assert torch.get_num_threads() == threads


def test_guard_verify_catches_a_mutation() -> None:
    from convdoctor._guard import ModelChangedError

    model = Z.WithDropout()
    with pytest.raises(ModelChangedError), preserve_model_state(model, verify=True), torch.no_grad():
        model.conv.weight.add_(1)
