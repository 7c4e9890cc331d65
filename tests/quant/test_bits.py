"""The per-layer grid measurement runs the real kernels with the grids torchao's convert would use.

On this process's CPU (exact kernels where it has VNNI) each layer's error with each grid must
equal the error of that grid computed in plain fp32: ``F.conv2d`` / ``F.linear`` on the tensors
that torchao's ``convert_pt2e`` of :func:`narrowed` dequantizes, no oneDNN. 8-bit must beat both
7-bit grids there. The saturating CPUs are covered in child processes by ``test_isa_path.py``.
"""

from __future__ import annotations

import copy
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convdoctor.quant.bits import Grid, LayerBits, grids_by_layer, measure_layer_bits, narrowed
from convdoctor.quant.isa import int8_path


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
def calibrated() -> tuple[torch.fx.GraphModule, torch.Tensor]:
    from torchao.quantization.pt2e import quantize_pt2e as qpt2e

    from convdoctor.quant.pt2e import _prepare

    x = torch.randn(32, 3, 10, 10)
    prepared, _, _, _ = _prepare(_model(), [x[:16], x[16:]], (x[:16],), qpt2e)
    return prepared, x[:16]


def _float_errors(prepared: torch.fx.GraphModule, grid: Grid, batch: torch.Tensor) -> dict[str, float]:
    """Each layer's error with ``grid`` everywhere, from torchao's own q/dq, computed in fp32 by hand."""
    from torchao.quantization.pt2e import quantize_pt2e as qpt2e

    names = [n.name for n in prepared.graph.nodes if n.name in ("conv2d", "conv2d_1", "linear")]
    reference = qpt2e.convert_pt2e(narrowed(prepared, dict.fromkeys(names, grid)))
    weights = {  # the fp32 weights, as the observers saw them
        n.name: operator.attrgetter(str(n.args[1].args[0].target))(prepared)
        for n in prepared.graph.nodes
        if n.name in names
    }
    seen: dict[str, torch.Tensor] = {}

    class Grab(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> object:
            out = super().run_node(n)
            seen[n.name] = out
            return out

    qd = torch.ops.quantized_decomposed
    out = {}
    with torch.no_grad():
        Grab(copy.deepcopy(prepared)).run(batch)  # each layer's fp32 input, as the fp32 model computes it
        x_float = {n.name: seen[n.args[0].name] for n in prepared.graph.nodes if n.name in names}
        Grab(reference).run(batch)  # the int8 weights as torchao dequantizes them
        for node in reference.graph.nodes:
            if node.name not in names:
                continue
            dq, wdq, w = node.args[0], node.args[1], weights[node.name]
            x = x_float[node.name]
            x_grid = qd.dequantize_per_tensor(qd.quantize_per_tensor(x, *dq.args[1:]), *dq.args[1:])
            w_grid = seen[wdq.name]
            if "linear" in str(node.target):
                exact, got = F.linear(x, w), F.linear(x_grid, w_grid)
            else:
                kw = {
                    "stride": node.args[3],
                    "padding": node.args[4],
                    "groups": node.args[6] if len(node.args) > 6 else 1,
                }
                exact, got = F.conv2d(x, w, **kw), F.conv2d(x_grid, w_grid, **kw)
            out[node.name] = float((got - exact).norm() / exact.norm())
    return out


def test_exact_kernels_measure_what_fp32_computes(calibrated: tuple[torch.fx.GraphModule, torch.Tensor]) -> None:
    if int8_path().saturates:
        pytest.skip("this CPU's int8 kernels saturate: covered by test_isa_path's capped children")
    prepared, batch = calibrated
    rows = measure_layer_bits(prepared, batch)
    assert [r.node for r in rows] == ["conv2d", "conv2d_1", "linear"]
    assert [r.layer for r in rows] == ["0", "2", "4"]
    for grid in Grid:
        by_hand = _float_errors(prepared, grid, batch)
        for row in rows:
            assert row.errors[grid] == pytest.approx(by_hand[row.node], rel=1e-3, abs=1e-6), (grid, row)
    for row in rows:  # the finest grid wins on exact kernels
        assert not row.reason and row.grid is Grid.FULL, row
        assert row.errors[Grid.FULL] < min(row.errors[Grid.SEVEN_BIT_ACTIVATIONS], row.errors[Grid.SEVEN_BIT_WEIGHTS])


def test_measuring_leaves_calibration_alone(calibrated: tuple[torch.fx.GraphModule, torch.Tensor]) -> None:
    from torchao.quantization.pt2e import quantize_pt2e as qpt2e

    prepared, batch = calibrated
    before = {k: v.clone() for k, v in prepared.state_dict().items()}
    measure_layer_bits(prepared, batch)
    chosen = {"conv2d_1": Grid.SEVEN_BIT_ACTIVATIONS, "linear": Grid.SEVEN_BIT_WEIGHTS}
    reference = qpt2e.convert_pt2e(narrowed(prepared, chosen))
    after = prepared.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # the copy gives exactly the chosen grids (read back from the converted graph); the original keeps 8 bits
    assert grids_by_layer(reference) == {"0": (8, 8), "2": (7, 8), "4": (8, 7)}
    assert grids_by_layer(qpt2e.convert_pt2e(narrowed(prepared, None))) == {"0": (7, 8), "2": (7, 8), "4": (7, 8)}
    assert grids_by_layer(qpt2e.convert_pt2e(narrowed(prepared, {}))) == {"0": (8, 8), "2": (8, 8), "4": (8, 8)}


@pytest.mark.parametrize(
    ("errors", "reason", "grid"),
    [
        (
            {Grid.FULL: 0.2, Grid.SEVEN_BIT_ACTIVATIONS: 0.01, Grid.SEVEN_BIT_WEIGHTS: 0.02},
            "",
            Grid.SEVEN_BIT_ACTIVATIONS,
        ),
        ({Grid.FULL: 0.2, Grid.SEVEN_BIT_ACTIVATIONS: 0.02, Grid.SEVEN_BIT_WEIGHTS: 0.01}, "", Grid.SEVEN_BIT_WEIGHTS),
        ({Grid.FULL: 0.004, Grid.SEVEN_BIT_ACTIVATIONS: 0.008, Grid.SEVEN_BIT_WEIGHTS: 0.009}, "", Grid.FULL),
        (
            {Grid.FULL: 0.01, Grid.SEVEN_BIT_ACTIVATIONS: 0.01, Grid.SEVEN_BIT_WEIGHTS: 0.01},
            "",
            Grid.FULL,
        ),  # tie: finest
        ({}, "not measured (RuntimeError)", Grid.SEVEN_BIT_ACTIVATIONS),  # cannot saturate
    ],
)
def test_layer_takes_the_grid_with_the_smallest_error(errors: dict[Grid, float], reason: str, grid: Grid) -> None:
    row = LayerBits("conv2d", "0", errors, reason=reason)
    assert row.grid is grid
    record = row.to_dict()
    assert record["grid"] == str(grid) and set(record["errors"]) == {str(g) for g in errors}


@pytest.mark.parametrize(
    ("shapes", "samples"),
    [
        ([(64, 3, 32, 32)] * 3, 192),  # 2**20 / 3,072 = 342 samples wanted: every calibration digit
        ([(32, 3, 224, 224)] * 4, 7),  # 2**20 / (3 * 224 * 224) = 6.97: seven samples
        ([(2, 3, 512, 512)], 2),  # never fewer than 4 unless the batches hold fewer
    ],
)
def test_measurement_runs_on_about_a_million_input_values(shapes: list[tuple[int, ...]], samples: int) -> None:
    from convdoctor.quant.bits import measurement_batch

    assert measurement_batch([torch.zeros(s) for s in shapes]).shape[0] == samples


def test_measurement_draws_from_every_calibration_batch() -> None:
    # an unshuffled loader (sorted by class): batch i holds class i only; the measurement must see them all
    from convdoctor.quant.bits import measurement_batch

    batches = [torch.full((32, 3, 224, 224), float(i)) for i in range(4)]
    got = measurement_batch(batches)
    assert got.shape[0] == 7 and set(got[:, 0, 0, 0].tolist()) == {0.0, 1.0, 2.0, 3.0}
    short = [torch.full((1, 3, 224, 224), 0.0), torch.full((32, 3, 224, 224), 1.0)]  # a short batch: the other fills in
    assert measurement_batch(short)[:, 0, 0, 0].tolist() == [0.0] + [1.0] * 6
    static = measurement_batch(batches, size=32)  # a static batch size is kept exactly
    assert static.shape[0] == 32 and static[:, 0, 0, 0].tolist() == [float(i // 8) for i in range(32)]
