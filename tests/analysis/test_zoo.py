"""Edge-case zoo: every expected figure is hand arithmetic, written out in the test."""

from __future__ import annotations

import pytest
import torch

from convdoctor.inspect import inspect
from tests.fixtures import models as Z


def test_functional_only() -> None:
    r = inspect(Z.FunctionalOnly(), (2, 3, 8, 8))
    conv = 2 * 8 * 8 * 8 * 3 * 3 * 3  # N*Hout*Wout*Cout*Cin*k*k
    linear = 2 * 8 * 10  # N*in*out
    assert r.totals["macs"] == conv + linear
    assert r.totals["flops"] == 2 * (conv + linear)
    assert r.totals["params"] == 8 * 3 * 3 * 3 + 10 * 8 + 10
    relu = 2 * 8 * 8 * 8  # one per element
    pool = 2 * 8 * 4 * 4 * 2 * 2  # per output, a 2x2 window
    mean = 2 * 8 * 4 * 4  # one add per input element
    bias = 2 * 10
    assert r.totals["other_flops"] == relu + pool + mean + bias
    assert r.output_shapes == ((2, 10),)
    assert r.uncounted_ops == {}


def test_cat_add_interpolate() -> None:
    r = inspect(Z.CatAddInterp(), (1, 4, 8, 8))
    a = 8 * 8 * 6 * 4 * 3 * 3  # Hout*Wout*Cout*Cin*k*k
    b = 8 * 8 * 2 * 4  # 1x1
    down = 4 * 4 * 8 * 8 * 3 * 3  # stride 2: 4x4 outputs
    assert r.totals["macs"] == a + b + down
    relu_add = 2 * (8 * 8 * 8)  # relu and add over 1x8x8x8
    bilinear = 7 * (8 * 8 * 8)  # 4 mul + 3 add per output element of 1x8x8x8
    assert r.totals["other_flops"] == relu_add + bilinear
    assert r.output_shapes == ((1, 8, 8, 8),)
    assert r.layer("a").output_shape == (1, 6, 8, 8)


def test_matmul_and_attention() -> None:
    r = inspect(Z.Attention(dim=16, heads=2), (2, 5, 16))
    b, n, d, h = 2, 5, 16, 2
    qkv = b * n * d * 3 * d
    scores = b * h * n * n * (d // h)  # explicit q @ k^T
    sdpa = b * h * n * n * (d // h) * 2  # QK^T and AV
    proj = b * n * d * d
    assert r.totals["macs"] == qkv + scores + sdpa + proj
    assert r.totals["params"] == (d * 3 * d + 3 * d) + d * d


def test_grouped_depthwise_dilated_transposed() -> None:
    r = inspect(Z.Convs(), (1, 8, 10, 10))
    grouped = 10 * 10 * 16 * (8 // 4) * 3 * 3
    depthwise = 10 * 10 * 16 * 1 * 3 * 3
    dilated = 10 * 10 * 16 * 16 * 3 * 3  # padding 2, dilation 2 keeps 10x10
    transposed = 10 * 10 * 16 * 4 * 4 * 4  # per *input* position: Cin*Cout*k*k
    assert r.layer("grouped").macs == grouped
    assert r.layer("depthwise").macs == depthwise
    assert r.layer("dilated").macs == dilated
    assert r.layer("up").macs == transposed
    assert r.layer("up").output_shape == (1, 4, 20, 20)  # (10-1)*2 - 2*1 + 4
    assert r.totals["params"] == (16 * 2 * 9 + 16) + 16 * 9 + 16 * 16 * 9 + 16 * 4 * 16


def test_module_called_twice() -> None:
    r = inspect(Z.SharedTwice(), (1, 4, 6, 6))
    one_call = 6 * 6 * 4 * 4 * 3 * 3
    row = r.layer("conv")
    assert row.calls == 2
    assert row.macs == 2 * one_call
    assert r.totals["params"] == 4 * 4 * 9  # counted once


def test_dict_output() -> None:
    r = inspect(Z.DictOut(), (1, 3, 5, 5))
    assert r.output_shapes == ((1, 5), (1, 4))
    assert r.totals["macs"] == 5 * 5 * 4 * 3 * 9 + 4 * 5 + 4 * 4


def test_tied_weights_counted_once() -> None:
    r = inspect(Z.TiedWeights(), (3, 6))
    assert r.totals["params"] == 6 * 6
    assert r.totals["macs"] == 2 * (3 * 6 * 6)


def test_frozen_backbone() -> None:
    r = inspect(Z.FrozenBackbone(), (1, 3, 4, 4))
    backbone = 8 * 3 * 9 + 8 + 8  # conv + BN gamma/beta
    head = 8 * 3 + 3
    assert r.totals["params"] == backbone + head
    assert r.totals["trainable_params"] == head
    assert r.totals["param_bytes"] == 4 * (backbone + head)
    assert r.totals["buffer_bytes"] == 4 * (8 + 8) + 8  # running mean/var (fp32), num_batches_tracked (int64)


def test_lazy_module_left_uninitialized() -> None:
    model = Z.LazyHead()
    r = inspect(model, (1, 3, 5, 5))
    assert r.totals["params"] == 4 * 3 * 9 + (4 * 3 * 3) * 5 + 5
    assert torch.nn.parameter.is_lazy(model.fc.weight)  # the user's model is untouched


def test_data_dependent_falls_back_with_info() -> None:
    r = inspect(Z.DataDependent(), (1, 3, 6, 6))
    codes = {f.code: f for f in r.findings}
    assert codes["CAPTURE_FALLBACK"].severity.value == "info"
    assert r.totals["params"] == 4 * 3 * 9 + 4 * 3 * 25
    assert r.totals["macs"] in (6 * 6 * 4 * 3 * 9, 6 * 6 * 4 * 3 * 25)  # whichever branch ran


@pytest.mark.parametrize("dtype, size", [(torch.float16, 2), (torch.float32, 4)])
def test_dtype_changes_bytes_not_macs(dtype: torch.dtype, size: int) -> None:
    r = inspect(Z.FunctionalOnly(), (2, 3, 8, 8), dtype=dtype)
    assert r.totals["param_bytes"] == size * 306
    assert r.totals["macs"] == 27808
