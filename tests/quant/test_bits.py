"""The per-layer activation-bit measurement runs the real kernels with the right grids.

On this process's CPU (exact kernels where it has VNNI) each layer's 8-bit error must equal the
error of the same grids computed in plain fp32 (``F.conv2d`` / ``F.linear`` on dequantized
tensors, no oneDNN), and 8 bits must beat 7 (a finer grid). The saturating CPUs are covered in
child processes by ``test_isa_path.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convdoctor.quant.bits import LayerBits, measure_layer_bits, with_7bit_inputs
from convdoctor.quant.isa import int8_path

pytest.importorskip("torchao")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 10),
    ).eval()


@pytest.fixture(scope="module")
def calibrated() -> tuple[torch.fx.GraphModule, torch.fx.GraphModule, torch.Tensor]:
    from torchao.quantization.pt2e import quantize_pt2e as qpt2e

    from convdoctor.quant.pt2e import _prepare, _reference

    x = torch.randn(32, 3, 10, 10)
    prepared, _, _, _ = _prepare(_model(), [x[:16], x[16:]], (x[:16],), qpt2e)
    return prepared, _reference(prepared, qpt2e, frozenset()), x[:16]


def _float_error_8bit(reference: torch.fx.GraphModule, name: str, batch: torch.Tensor) -> float:
    """The layer's 8-bit error from the reference graph's own q/dq, computed in fp32 by hand."""
    seen: dict[str, torch.Tensor] = {}

    class Grab(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> object:
            out = super().run_node(n)
            seen[n.name] = out
            return out

    with torch.no_grad():
        Grab(reference).run(batch)
    node = next(n for n in reference.graph.nodes if n.name == name)
    dq, wdq = node.args[0], node.args[1]
    x_float, x_grid, w = seen[dq.args[0].args[0].name], seen[dq.name], seen[wdq.name]
    with torch.no_grad():
        if "linear" in str(node.target):
            exact, grid = F.linear(x_float, w), F.linear(x_grid, w)
        else:
            args = {
                "stride": node.args[3],
                "padding": node.args[4],
                "groups": node.args[6] if len(node.args) > 6 else 1,
            }
            exact, grid = F.conv2d(x_float, w, **args), F.conv2d(x_grid, w, **args)
    return float((grid - exact).norm() / exact.norm())


def test_exact_kernels_measure_what_fp32_computes(
    calibrated: tuple[torch.fx.GraphModule, torch.fx.GraphModule, torch.Tensor],
) -> None:
    if int8_path().saturates:
        pytest.skip("this CPU's int8 kernels saturate: covered by test_isa_path's capped children")
    prepared, reference, batch = calibrated
    rows = measure_layer_bits(prepared, reference, batch)
    assert [r.node for r in rows] == ["conv2d", "conv2d_1", "linear"]
    assert [r.layer for r in rows] == ["0", "2", "4"]
    for row in rows:
        assert not row.reason and row.bits == 8, row
        assert row.error_8bit < row.error_7bit, row  # the finer grid, on exact kernels
        assert row.error_8bit == pytest.approx(_float_error_8bit(reference, row.node, batch), rel=1e-3, abs=1e-6)


def test_measuring_leaves_calibration_alone(
    calibrated: tuple[torch.fx.GraphModule, torch.fx.GraphModule, torch.Tensor],
) -> None:
    prepared, reference, batch = calibrated
    before = {k: v.clone() for k, v in prepared.state_dict().items()}
    measure_layer_bits(prepared, reference, batch)
    narrowed = with_7bit_inputs(prepared, ["conv2d_1"])
    after = prepared.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # the copy narrows exactly the chosen layer's input observer; the original keeps 8 bits
    maxes = {
        n.name: getattr(narrowed, str(n.args[0].target)).quant_max
        for n in narrowed.graph.nodes
        if n.name in ("conv2d", "conv2d_1", "linear")
    }
    assert maxes == {"conv2d": 255, "conv2d_1": 127, "linear": 255}
    activations = [m for m in prepared.modules() if getattr(m, "dtype", None) == torch.uint8]
    assert activations and all(m.quant_max == 255 for m in activations)
    everywhere = [m for m in with_7bit_inputs(prepared, None).modules() if getattr(m, "dtype", None) == torch.uint8]
    assert len(everywhere) == len(activations) and all(m.quant_max == 127 for m in everywhere)


@pytest.mark.parametrize(
    ("row", "bits"),
    [
        (LayerBits("conv2d", "0", 0.2, 0.01), 7),
        (LayerBits("conv2d", "0", 0.004, 0.008), 8),
        (LayerBits("conv2d", "0", 0.01, 0.01), 8),  # a tie keeps the finer grid
        (LayerBits("conv2d", "0", math.nan, math.nan, reason="not measured (RuntimeError)"), 7),
    ],
)
def test_layer_takes_the_width_with_the_smaller_error(row: LayerBits, bits: int) -> None:
    assert row.bits == bits
    record = row.to_dict()
    assert record["bits"] == bits
    assert (record["error_8bit"] is None) == bool(row.reason)
