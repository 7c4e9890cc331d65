"""Architecture advice against hand arithmetic, and the training-memory estimate against a real step."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch.profiler import ProfilerActivity, profile

from convdoctor.advice import layer_alternatives, training_memory
from convdoctor.errors import UsageError


def test_layer_table_64_to_128_3x3_at_28() -> None:
    opts = {o.name: o for o in layer_alternatives(64, 128, 3, 28)}
    std = opts["standard 3x3"]
    assert (std.params, std.macs) == (73_728, 57_802_752)  # 128*64*9 weights x 28*28 positions
    dws = opts["depthwise-separable"]
    assert dws.params == 64 * 9 + 64 * 128 == 8_768
    assert dws.macs == 28 * 28 * (64 * 9 + 64 * 128) == 6_874_112
    strided = opts["strided 3x3 (stride 2)"]
    assert strided.macs == 14 * 14 * 73_728 and strided.output_shape == (1, 128, 14, 14)
    pooled = opts["3x3 + 2x2 max-pool"]
    assert pooled.macs == 57_802_752 and pooled.output_shape == (1, 128, 14, 14)


def test_large_kernel_gets_the_stack() -> None:
    stack = layer_alternatives(64, 64, 7, 28)[-1]
    assert stack.name == "3 stacked 3x3"
    assert stack.params == 3 * 9 * 64 * 64  # 27 C^2, vs 49 C^2 for the 7x7
    assert layer_alternatives(64, 64, 7, 28)[0].params == 49 * 64 * 64


def test_bad_layer_arguments() -> None:
    with pytest.raises(UsageError):
        layer_alternatives(0, 8)


def test_budget_and_accumulation_are_consistent() -> None:
    est = training_memory("torchvision:resnet18", (8, 3, 64, 64), budget_bytes=1 << 30, target_batch=512)
    assert est.max_batch is not None and est.accumulation_steps is not None
    at_max = training_memory("torchvision:resnet18", (est.max_batch, 3, 64, 64))
    over = training_memory("torchvision:resnet18", (est.max_batch + 2, 3, 64, 64))
    assert at_max.total_bytes <= 1 << 30 < over.total_bytes
    assert est.accumulation_steps * est.max_batch >= 512 > (est.accumulation_steps - 1) * est.max_batch
    with pytest.raises(UsageError, match="does not fit even batch 1"):
        training_memory("torchvision:resnet18", (8, 3, 64, 64), budget_bytes=1000)


def measured_training_peak(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Allocator bytes at the peak of one SGD-momentum step: what existed before (params and
    momentum; grads are None after zero_grad) plus the largest rise the profiler records."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    step()  # creates the momentum buffers
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    current = peak = 0
    for _, nbytes in sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    ):
        current += nbytes
        peak = max(peak, current)
    existing = sum(p.numel() * p.element_size() for p in model.parameters())
    existing += sum(s["momentum_buffer"].numel() * 4 for s in opt.state.values())
    existing += sum(b.numel() * b.element_size() for b in model.buffers())
    return existing + peak


@pytest.mark.slow
def test_resnet18_batch32_within_15_percent_of_a_real_step() -> None:
    torch.manual_seed(0)
    model = tvm.resnet18().train()
    x, y = torch.randn(32, 3, 224, 224), torch.randint(0, 1000, (32,))
    estimate = training_memory(model, (32, 3, 224, 224), optimizer="sgd_momentum").total_bytes
    measured = measured_training_peak(model, x, y)
    assert abs(estimate - measured) / measured <= 0.15, (estimate, measured)
