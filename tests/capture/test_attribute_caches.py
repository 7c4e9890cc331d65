"""Models that cache tensors in attributes (issue 16): every verb hands them back as they came.

``CachedGrid`` builds a grid on its first forward, keyed by shape, on the input's device,
the way YOLO's ``Detect`` and anchor generators do. The oracle is a fresh twin built from
the same seed: after each verb the model's outputs are bit-identical to the twin's, and
every module's ``__dict__`` holds the same objects it held before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import convdoctor
from convdoctor import fix
from convdoctor._guard import AttributeSnapshot, ModelChangedError, preserve_model_state
from convdoctor.capture.shadow import shadow
from convdoctor.capture.trace import capture
from convdoctor.errors import CaptureError
from tests.fixtures.models import CachedGrid

SHAPE = (2, 3, 16, 16)


def _x(shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def _model(ran_before: bool) -> CachedGrid:
    torch.manual_seed(0)
    model = CachedGrid().eval()
    if ran_before:
        model(_x())
    return model


def _bindings(model: nn.Module) -> dict[str, dict[str, int]]:
    return {path: {k: id(v) for k, v in vars(m).items()} for path, m in model.named_modules()}


VERBS: dict[str, Callable[[nn.Module], Any]] = {
    "inspect": lambda m: convdoctor.inspect(m, example_input=_x()),
    "rf-analytic": lambda m: convdoctor.receptive_field(m, example_input=_x()),
    "rf-gradient": lambda m: convdoctor.receptive_field(m, example_input=_x(), method="gradient", layer="conv"),
    "audit": lambda m: convdoctor.audit(m, _x(), batch_sizes=(1, 2)),
    "bench": lambda m: convdoctor.bench(m, "2x3x16x16"),
    "check": lambda m: convdoctor.check(m, "2x3x16x16"),
    "fix.fuse_conv_bn": lambda m: fix.fuse_conv_bn(m, _x()),
    "fix.prepare_for_inference": lambda m: fix.prepare_for_inference(m, fuse=True, example_input=_x()),
    "fix.warmup": lambda m: fix.warmup(m, _x(), 2),
}


@pytest.mark.parametrize("ran_before", [False, True], ids=["fresh", "ran-before"])
@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_leaves_cached_attributes_alone(verb: str, ran_before: bool) -> None:
    model, twin = _model(ran_before), _model(ran_before)
    before = _bindings(model)
    VERBS[verb](model)
    assert _bindings(model) == before, "an attribute was added, dropped or rebound"
    assert torch.equal(model(_x()), twin(_x()))
    assert torch.equal(model(_x((1, 3, 12, 12))), twin(_x((1, 3, 12, 12))))  # a new shape rebuilds for real


def test_capture_does_not_depend_on_the_models_history() -> None:
    fresh = convdoctor.inspect(_model(False), example_input=_x()).to_dict()
    ran = convdoctor.inspect(_model(True), example_input=_x()).to_dict()
    other = _model(False)
    other(_x((1, 3, 8, 8)))  # a cache for another shape
    assert ran == fresh
    assert convdoctor.inspect(other, example_input=_x()).to_dict() == fresh
    for model in (_model(False), _model(True)):
        graph = capture(model, (_x(),))
        assert graph.fallback_reason is None  # the same (meta) path, whatever the history
        # the steady state: the cached grid is a constant, not rebuilt (no arange/meshgrid)
        assert not any("arange" in n.op for n in graph.nodes)


def test_a_cache_built_on_meta_does_not_poison_the_real_fallback() -> None:
    class CachedThenDataDependent(CachedGrid):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = super().forward(x)
            return y[y > 0]  # boolean mask: no meta kernel gives its size, so capture runs for real

    torch.manual_seed(0)
    model = CachedThenDataDependent().eval()
    graph = capture(model, (_x(),))
    assert graph.fallback_reason is not None and "nonzero" in graph.fallback_reason.lower()
    assert model.grid.numel() == 0 and model.offsets == {}


def test_capture_never_runs_the_users_objects() -> None:
    ran_on: list[int] = []

    class Witness(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ran_on.append(id(self))
            return x * 2

    model = nn.Sequential(nn.Conv2d(3, 3, 1), Witness())
    capture(model, (_x((1, 3, 4, 4)),))
    assert ran_on and id(model[1]) not in ran_on


def test_capture_leaves_weight_norm_attributes_alone() -> None:
    """Old-style weight norm sets ``self.weight`` in a pre-hook on every call."""
    with pytest.warns(FutureWarning):  # deprecated, and still in many checkpoints' code
        model = nn.Sequential(torch.nn.utils.weight_norm(nn.Conv2d(3, 4, 3)), nn.ReLU())
    conv = model[0]
    weight = vars(conv)["weight"]
    capture(model, (_x((1, 3, 8, 8)),))
    assert vars(conv)["weight"] is weight and weight.device.type == "cpu"


def test_shadow_keeps_names_sharing_and_weights() -> None:
    shared = nn.Conv2d(3, 3, 1)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    model.extra = [shared]  # type: ignore[assignment]  # a module referenced from a plain list
    twin = shadow(model)
    assert [n for n, _ in twin.named_modules()] == [n for n, _ in model.named_modules()]
    assert twin[0] is twin[2] and twin[0] is not shared and twin.extra[0] is twin[0]  # type: ignore[index]
    assert twin[0].weight is shared.weight
    assert twin._modules is not model._modules and twin[0]._forward_hooks is not shared._forward_hooks


def test_guard_restores_added_rebound_inserted_and_written_attributes() -> None:
    model = _model(True)
    before = _bindings(model)
    offsets = dict(model.offsets)
    scale = model.scale.clone()
    with preserve_model_state(model, verify=True):
        model.grid = torch.zeros(3)
        model.new_attr = torch.ones(2)
        model.offsets[(99, 99)] = torch.ones(1)
        model.scale.mul_(7)
        model.conv.training = True
    assert _bindings(model) == before
    assert model.offsets == offsets and torch.equal(model.scale, scale)


def test_guard_verify_names_an_attribute_it_could_not_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    import convdoctor._guard as guard

    monkeypatch.setattr(guard, "RESTORE_LIMIT_BYTES", 0)  # too big to copy: only watched
    model = _model(True)
    with pytest.raises(ModelChangedError, match="scale"), preserve_model_state(model, verify=True):
        model.scale.add_(1)


def test_snapshot_sees_what_a_run_builds() -> None:
    model = _model(False)
    snap = AttributeSnapshot(model, values=False)
    model(_x())
    assert {"grid", "shape", "offsets"} <= set(snap.changes())
    snap.restore()
    assert snap.changes() == [] and model.shape is None


def test_torch_compiled_model_reports_the_inner_names() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    report = convdoctor.inspect(torch.compile(model), "1x3x8x8")
    names = [row["name"] for row in report.to_dict()["layers"]]
    assert "0" in names and not any("_orig_mod" in n for n in names)


def test_a_model_on_meta_that_fails_keeps_the_meta_reason() -> None:
    class Picky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(12, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))  # built for 1x3x2x2 inputs

    with torch.device("meta"):
        model = Picky()
    with pytest.raises(
        CaptureError, match=r"meta device, where meta execution failed \(RuntimeError: a and b must have"
    ):
        capture(model, (torch.empty(1, 3, 4, 4, device="meta"),))


def test_guard_restores_torchscript_training_flags() -> None:
    """A ScriptModule's ``training`` lives in C++, outside ``__dict__``: restored all the same."""
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train())
    with preserve_model_state(scripted):
        scripted.eval()
    assert [m.training for m in scripted.modules()] == [True, True, True]
