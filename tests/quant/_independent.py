"""Measurements made without the code under test: accuracy, file sizes, MACs by forward hooks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` as it is, one forward per 256 samples."""
    with torch.no_grad():
        pred = torch.cat([model(c).argmax(1) for c in torch.split(x, 256)])
    return float((pred == y).float().mean())


def saved_file(model: nn.Module, path: Path) -> dict[str, object]:
    """``torch.save`` the state_dict to ``path`` (mkldnn tensors made dense) and load it back safely."""
    state = {
        k: v.to_dense() if isinstance(v, torch.Tensor) and v.is_mkldnn else v for k, v in model.state_dict().items()
    }
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def file_bytes(path: Path) -> int:
    """Size on disk."""
    return os.path.getsize(path)


def weight_elements(model: nn.Module) -> int:
    """Elements of every Conv2d and Linear weight."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def hooked_macs(model: nn.Module, x: torch.Tensor, types: tuple[type[nn.Module], ...]) -> int:
    """MACs of the modules of ``types``, from real output shapes recorded by forward hooks.

    Conv2d: output elements * in_channels / groups * kh * kw. Linear: output elements * in_features.
    """
    total = 0

    def hook(m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, types)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


#: Int8 steps by which a kernel's requantization may differ from the reference's per activation:
#: oneDNN rounds a fused conv's output once, the reference rounds after each fp32 op, and a step
#: lost early can carry into the next grid.
KERNEL_STEPS = 2


def kernel_tolerance(reference: torch.fx.GraphModule, head: nn.Linear) -> tuple[float, float]:
    """How far an int8 kernel may move the logits from the reference, from the program's own grids.

    The logits are ``head`` applied to the last quantized activation, whose step ``s`` the
    reference graph states (the ``dequantize_per_tensor`` feeding its last linear). If each of
    that activation's values is off by at most :data:`KERNEL_STEPS` steps, logit ``j`` moves by
    at most ``KERNEL_STEPS * s * sum_i |W_ji|`` (every error aligned), and by about
    ``KERNEL_STEPS * s * ||W_j||_2`` in RMS when the errors' signs are independent.

    Returns:
        ``(max_abs, rms)``: the worst-case bound per element and the bound on the RMS difference.
    """
    linears = [n for n in reference.graph.nodes if n.target is torch.ops.aten.linear.default]
    if not linears:
        raise AssertionError("the reference graph has no linear layer")
    act = linears[-1].args[0]
    assert "dequantize_per_tensor" in str(act.target), f"the last linear's input is not int8: {act.format_node()}"
    step = float(act.args[1])
    w = head.weight.detach().float()
    return KERNEL_STEPS * step * float(w.abs().sum(1).max()), KERNEL_STEPS * step * float(w.norm(dim=1).max())


def assert_within_kernel_steps(got: torch.Tensor, ref: torch.Tensor, tolerance: tuple[float, float]) -> None:
    """``got`` is the reference up to :func:`kernel_tolerance`: every element, and in RMS."""
    max_abs, rms = tolerance
    diff = (got.float() - ref.float()).abs()
    assert float(diff.max()) <= max_abs, f"max |diff| {float(diff.max()):.4g} > {max_abs:.4g} ({KERNEL_STEPS} steps)"
    measured = float(diff.pow(2).mean().sqrt())
    assert measured <= rms, f"RMS diff {measured:.4g} > {rms:.4g}: more than {KERNEL_STEPS} int8 steps per activation"
