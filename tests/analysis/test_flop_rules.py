"""Rule tables: formulas on shapes, registry hygiene, the three outcomes."""

from __future__ import annotations

import pytest
import torch
from torch._ops import ops

from convdoctor.analysis._registry import RuleTable
from convdoctor.analysis.flops import (
    FLOP_RULES,
    OpCost,
    adaptive_pool_reads,
    attention_macs,
    bmm_macs,
    conv_macs,
    count_flops,
    mm_macs,
)
from convdoctor.analysis.zero_cost import ZERO_COST
from convdoctor.capture.trace import capture
from convdoctor.inspect import inspect

aten = ops.aten


def test_article_layer_table_conv() -> None:
    # 64->128 3x3 conv on 28x28 (padding 1): 73,728 weights x 784 output positions
    assert conv_macs((1, 64, 28, 28), (128, 64, 3, 3), (1, 128, 28, 28), False) == 57_802_752


def test_transposed_conv_counts_input_positions() -> None:
    # 16->4, 4x4 kernel, stride 2: every one of 10x10 inputs scatters 4*16 weights... per input channel
    assert conv_macs((1, 16, 10, 10), (16, 4, 4, 4), (1, 4, 20, 20), True) == 100 * 16 * 4 * 16


def test_matmul_formulas() -> None:
    assert mm_macs((3, 4), (4, 5)) == 3 * 4 * 5
    assert bmm_macs((2, 3, 4), (2, 4, 5)) == 2 * 3 * 4 * 5
    assert attention_macs((2, 4, 7, 8), (2, 4, 9, 8), (2, 4, 9, 6)) == 2 * 4 * 7 * 9 * (8 + 6)


def test_adaptive_pool_overlapping_windows() -> None:
    # 5 -> 3: windows [0,2), [1,4), [3,5): sizes 2+3+2 = 7 per axis
    assert adaptive_pool_reads((5, 5), (3, 3)) == 7 * 7
    assert adaptive_pool_reads((8, 8), (1, 1)) == 64


def test_registry_rejects_duplicates_and_non_ops() -> None:
    table: RuleTable = RuleTable("t")
    table.register(aten.mm)(lambda n: OpCost())
    with pytest.raises(ValueError, match="registered twice"):
        table.register(aten.mm)(lambda n: OpCost())
    with pytest.raises(TypeError, match="not an aten OpOverloadPacket"):
        table.register("aten.mm")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        table.register(aten.mm.default)  # an overload, not a packet


def test_known_zero_and_rules_are_disjoint_and_reasoned() -> None:
    assert not set(ZERO_COST) & set(FLOP_RULES)
    assert all(len(reason) > 10 for reason in ZERO_COST.values())


def test_unknown_op_is_uncounted_never_zero() -> None:
    class UsesCumprod(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumprod(x, dim=1) + 1

    r = inspect(UsesCumprod(), (2, 8))
    assert r.uncounted_ops == {"aten.cumprod": 1}
    codes = [f.code for f in r.findings]
    assert "UNCOUNTED_OPS" in codes
    assert r.layers[0].uncounted == 1


def test_extra_rules_fill_the_gap() -> None:
    class UsesCumprod(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumprod(x, dim=1)

    r = inspect(UsesCumprod(), (2, 8), extra_rules={aten.cumprod: lambda node: OpCost(0, node.outputs[0].numel)})
    assert r.uncounted_ops == {}
    assert r.totals["other_flops"] == 16


def test_count_flops_is_pure_over_the_graph() -> None:
    g = capture(torch.nn.Linear(4, 3), (torch.empty(2, 4, device="meta"),))
    a, b = count_flops(g), count_flops(g)
    assert a == b
    assert a.macs == 2 * 4 * 3
