"""Per-module profile, peak memory, and the static costs bench reports (MACs, params, bytes)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from bench_helpers import tiny_cnn, tiny_macs
from torch import nn

from convdoctor.bench._costs import model_costs
from convdoctor.bench.profile import profile_modules


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_cpu_peak_memory_is_exact_for_known_allocations() -> None:
    # Two out-of-place ReLUs on 1e6 float32: the first output (4 MB) is alive while the
    # second (4 MB) is written, then freed: peak 8,000,000 bytes above the start.
    model = nn.Sequential(nn.ReLU(), nn.ReLU()).eval()
    x = torch.randn(1, 1_000_000)
    with torch.inference_mode():
        model(x)
        prof = profile_modules(model, lambda: model(x), runs=2)
    assert prof.peak_bytes == 2 * 1_000_000 * 4
    assert prof.peak_reason is None


def test_module_times_are_per_path_and_inclusive() -> None:
    model = tiny_cnn(8).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        model(x)
        prof = profile_modules(model, lambda: model(x), runs=3)
    assert set(prof.module_ms) == {"", "0", "1", "2", "3", "4", "5", "6"}
    leaves = sum(v for k, v in prof.module_ms.items() if k)
    assert prof.module_ms[""] >= leaves  # the root's range contains every child's: inclusive times
    assert all(v > 0 for v in prof.module_ms.values())
    assert prof.runs == 3
    assert _hooks(model) == 0  # the profiling ranges are gone


def test_profile_removes_hooks_when_forward_raises() -> None:
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = nn.Sequential(nn.ReLU(), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        profile_modules(model, lambda: model(torch.ones(2)), runs=1)
    assert _hooks(model) == 0


def test_tiny_costs_match_hand_arithmetic() -> None:
    model = tiny_cnn(8)
    costs = model_costs(model, (4, 3, 16, 16))
    assert costs.macs == tiny_macs(8, batch=4)
    assert costs.params == sum(p.numel() for p in model.parameters())
    assert costs.layer_macs["0"] == 4 * 16 * 16 * 8 * 27
    # conv reads x (4*3*16*16 floats) and w (8*3*3*3), writes 4*8*16*16, all float32
    assert costs.layer_bytes["0"] == 4 * (4 * 3 * 256 + 8 * 27 + 4 * 8 * 256)


def test_linear_bytes_skip_the_transpose_view() -> None:
    costs = model_costs(nn.Linear(100, 10), (4, 100))
    # addmm reads bias (10), x (4x100), W^T (a view of the 10x100 weight), writes 4x10; t() moves nothing
    assert costs.total_bytes == 4 * (10 + 400 + 1000 + 40)
    assert costs.macs == 4 * 100 * 10
    assert costs.intensity == pytest.approx(4000 / 5800)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_macs_and_params_match_torchvision_metadata(name: str) -> None:
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    costs = model_costs(torchvision.models.get_model(name, weights=None), (1, 3, 224, 224))
    assert round(costs.macs / 1e9, 3) == pytest.approx(meta["_ops"])  # torchvision's "_ops" are GMACs
    assert costs.params == meta["num_params"]
    assert costs.uncounted == {}


def test_costs_do_not_touch_the_model(tiny: nn.Module) -> None:
    from convdoctor._guard import state_dict_digest, training_flags

    digest, flags = state_dict_digest(tiny), training_flags(tiny)
    model_costs(tiny, (2, 3, 16, 16))
    assert state_dict_digest(tiny) == digest and training_flags(tiny) == flags
