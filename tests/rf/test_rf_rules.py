"""Each receptive-field rule against autograd on a small model that exercises it.

Exact rules must agree with the measured support of the central unit; rules that can
only bound the field (``exact=False``) must contain it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convdoctor.analysis.rf._field import hull_at
from convdoctor.analysis.rf._registry import RF_RULES, rf_rule
from convdoctor.analysis.rf.core import analyze
from convdoctor.analysis.rf.gradient import gradient_field
from convdoctor.capture.trace import capture


class Fn(nn.Module):
    """Wraps a function of x (with a few parameters) as a module."""

    def __init__(self, fn: Callable[..., torch.Tensor], **params: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleDict(params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.mods)


def conv(cin: int = 2, cout: int = 2, k=3, **kw) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, **kw)


def _se(x: torch.Tensor, m: nn.ModuleDict) -> torch.Tensor:
    y = m["c"](x)
    return y * torch.sigmoid(m["g"](y.mean((2, 3), keepdim=True)))


def _nhwc(x: torch.Tensor, m: nn.ModuleDict) -> torch.Tensor:
    y = m["dw"](x).permute(0, 2, 3, 1)
    y = m["lin"](m["ln"](y))  # per-position MLP in channels-last, like ConvNeXt
    return y.permute(0, 3, 1, 2)


def _shuffle(x: torch.Tensor, m: nn.ModuleDict) -> torch.Tensor:
    a, b = m["c"](x).chunk(2, dim=1)
    y = torch.cat([a, m["d"](b)], 1)
    n, c, h, w = y.shape
    return m["e"](y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w))


def _s2d(x: torch.Tensor, m: nn.ModuleDict) -> torch.Tensor:
    y = m["c"](x)
    n, c, h, w = y.shape
    y = y.view(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).contiguous()
    return m["e"](y.view(n, c * 4, h // 2, w // 2))


def _windows(x: torch.Tensor, m: nn.ModuleDict) -> torch.Tensor:
    """Partition into 4x4 windows and mix each window's 16 positions: unit = one window."""
    y = m["c"](x)
    n, c, h, w = y.shape
    y = y.view(n, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(n, h // 4, w // 4, c * 16)
    return m["e"](y).permute(0, 3, 1, 2)


CASES = {
    # name: (model, input shape, exact, global)
    "conv_nonsquare_strided_dilated": (
        conv(k=(3, 5), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
        (1, 2, 40, 40),
        True,
        False,
    ),
    "conv1d": (
        nn.Sequential(nn.Conv1d(2, 2, 5, stride=2, padding=1), nn.Conv1d(2, 2, 3, dilation=3)),
        (1, 2, 90),
        True,
        False,
    ),
    "conv3d": (nn.Conv3d(1, 1, (1, 3, 5), stride=(1, 2, 1), padding=(0, 1, 2)), (1, 1, 3, 20, 20), True, False),
    "conv_transpose_s1": (
        nn.Sequential(conv(k=3, stride=2), nn.ConvTranspose2d(2, 2, 3, padding=1, dilation=2)),
        (1, 2, 40, 40),
        True,
        False,
    ),
    "conv_transpose_s2": (
        nn.Sequential(conv(k=3, stride=2), nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1)),
        (1, 2, 40, 40),
        False,
        False,
    ),
    "maxpool_ceil_dilated": (
        nn.Sequential(conv(), nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), conv()),
        (1, 2, 41, 41),
        True,
        False,
    ),
    "avgpool_no_pad_count": (
        nn.Sequential(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), conv()),
        (1, 2, 33, 33),
        True,
        False,
    ),
    "lp_pool": (nn.Sequential(conv(), nn.LPPool2d(2, 3, 2), conv()), (1, 2, 40, 40), True, False),
    "adaptive_even": (nn.Sequential(conv(padding=1), nn.AdaptiveAvgPool2d(8), conv()), (1, 2, 64, 64), True, False),
    "adaptive_max_even": (nn.Sequential(nn.AdaptiveMaxPool2d((10, 5)), conv()), (1, 2, 40, 40), True, False),
    "adaptive_uneven": (nn.Sequential(conv(), nn.AdaptiveAvgPool2d(7), conv()), (1, 2, 40, 40), False, False),
    "global_pool_gate": (Fn(_se, c=conv(padding=1), g=conv(k=1)), (1, 2, 24, 24), True, True),
    "upsample_nearest": (
        nn.Sequential(conv(stride=2), nn.Upsample(scale_factor=2), conv()),
        (1, 2, 40, 40),
        False,
        False,
    ),
    "upsample_bilinear": (
        nn.Sequential(conv(stride=2), nn.Upsample(scale_factor=2, mode="bilinear"), conv()),
        (1, 2, 40, 40),
        False,
        False,
    ),
    "downsample_nearest": (nn.Sequential(conv(), nn.Upsample(scale_factor=0.5), conv()), (1, 2, 40, 40), True, False),
    "pad_constant": (Fn(lambda x, m: m["c"](F.pad(x, (1, 2, 3, 0))), c=conv()), (1, 2, 30, 30), True, False),
    "pad_reflect": (
        nn.Sequential(nn.ReflectionPad2d(2), conv(), nn.ReplicationPad2d((1, 0, 0, 1)), conv()),
        (1, 2, 30, 30),
        True,
        False,
    ),
    "pixel_unshuffle": (nn.Sequential(conv(), nn.PixelUnshuffle(2), conv(8, 2)), (1, 2, 40, 40), True, False),
    "pixel_shuffle": (nn.Sequential(conv(2, 8), nn.PixelShuffle(2), conv()), (1, 2, 30, 30), False, False),
    "spatial_slice": (Fn(lambda x, m: m["c"](m["c"](x)[:, :, 3:, ::2]), c=conv()), (1, 2, 40, 40), True, False),
    "flip": (
        Fn(lambda x, m: m["c"](torch.flip(m["d"](x), (2, 3))), c=conv(), d=conv(k=(1, 5), padding=(0, 1))),
        (1, 2, 31, 31),
        True,
        False,
    ),
    "channels_last_mlp": (
        Fn(_nhwc, dw=nn.Conv2d(2, 2, 7, padding=3, groups=2), ln=nn.LayerNorm(2), lin=nn.Linear(2, 4)),
        (1, 2, 30, 30),
        True,
        False,
    ),
    "group_norm": (nn.Sequential(conv(), nn.GroupNorm(1, 2), conv()), (1, 2, 30, 30), True, True),
    "channel_split_shuffle": (
        Fn(_shuffle, c=conv(2, 4, padding=1), d=conv(padding=1), e=conv(4, 2)),
        (1, 2, 30, 30),
        True,
        False,
    ),
    # TResNet's SpaceToDepth written with view/permute, and a window partition (Swin-style)
    "space_to_depth_view": (Fn(_s2d, c=conv(padding=1), e=conv(8, 2)), (1, 2, 40, 40), True, False),
    "window_partition": (Fn(_windows, c=conv(padding=1), e=nn.Linear(32, 2)), (1, 2, 40, 40), True, False),
    # a channel slice of a concatenation of different paths: only an upper bound
    "channel_slice_of_concat": (
        Fn(lambda x, m: torch.cat([m["c"](x), m["d"](x)], 1)[:, :2], c=conv(padding=1), d=conv(k=7, padding=3)),
        (1, 2, 30, 30),
        False,
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_against_autograd(name: str) -> None:
    model, shape, exact, is_global = CASES[name]
    graph = capture(model, (torch.empty(shape, device="meta"),))
    f = analyze(graph).fields[graph.outputs[0].producer]
    assert f.uncounted is None
    assert f.exact is exact and f.global_ is is_global
    g = gradient_field(model, shape)
    assert g.global_ is is_global
    for a in range(len(shape) - 2):
        lo, hi = hull_at(f.axes[a], (f.axis_size(a) - 1) // 2)
        assert 0 < lo and hi < shape[2 + a] - 1, "the test input must hold the central field"
        if exact:
            assert (g.lo[a], g.hi[a]) == (lo, hi), f"axis {a}"
        else:
            assert lo <= g.lo[a] and g.hi[a] <= hi, f"axis {a}: bound {lo}..{hi} misses {g.lo[a]}..{g.hi[a]}"


def test_different_jumps_merge_into_two_pieces_and_match_autograd() -> None:
    # branch a: stride 2 (jump 2); branch b: a wide valid conv with stride 1 and the same output size
    model = Fn(lambda x, m: m["a"](x) + m["b"](x), a=conv(k=3, stride=2, padding=1), b=conv(k=7, dilation=2))
    shape = (1, 2, 25, 25)
    graph = capture(model, (torch.empty(shape, device="meta"),))
    analysis = analyze(graph)
    f = analysis.fields[graph.outputs[0].producer]
    assert [len(p) for p in f.axes] == [2, 2] and f.misaligned and analysis.misaligned_at == ("",)
    g = gradient_field(model, shape)
    c = (f.axis_size(0) - 1) // 2
    assert (g.lo[0], g.hi[0]) == hull_at(f.axes[0], c)
    assert g.jump[0] == hull_at(f.axes[0], c + 1)[0] - hull_at(f.axes[0], c)[0]


def test_classic_recurrence_by_hand() -> None:
    # 3x3/s1 -> 2x2 pool/s2 -> 3x3/s1 (dilation 2): size 1+2=3, +1*1=4 (jump 2), +2*2*2=12; start 0, 0, -2*2
    model = nn.Sequential(conv(), nn.MaxPool2d(2), conv(padding=2, dilation=2))
    layer = analyze(capture(model, (torch.empty(1, 2, 32, 32),))).layer("")
    assert layer.size == (12, 12) and layer.jump == (2, 2) and layer.start == (-4, -4)


def test_flatten_linear_reads_the_whole_map() -> None:
    # conv 5x5 on 12x12 -> 8x8 map, jump 1; linear over all 64 positions: 5 + 7*1 = 12 px, the whole input
    model = nn.Sequential(conv(k=5), nn.Flatten(), nn.Linear(128, 3))
    layer = analyze(capture(model, (torch.empty(1, 2, 12, 12),))).layer("")
    assert layer.whole and layer.size == (12, 12) and layer.start == (0, 0)


def test_op_without_rule_is_uncounted_not_passed_through() -> None:
    model = Fn(lambda x, m: m["c"](torch.cumsum(m["c"](x), dim=2)), c=conv(padding=1))
    analysis = analyze(capture(model, (torch.empty(1, 2, 16, 16),)))
    assert analysis.uncounted_ops == {"aten.cumsum": 1}
    root = analysis.layer("")
    assert root.uncounted is not None and "aten.cumsum" in root.uncounted and root.size == (None, None)
    assert analysis.layer("mods.c").local  # the first call, before cumsum, is known


def test_extra_rules_fill_the_gap() -> None:
    from convdoctor.analysis.rf.reduction_rules import reduction_rule

    model = Fn(lambda x, m: m["c"](x).cumsum(dim=2), c=conv(padding=1))
    graph = capture(model, (torch.empty(1, 2, 16, 16),))
    # a cumulative sum along H reads every unit before it: say so with the reduction rule (global)
    analysis = analyze(graph, extra_rules={torch.ops.aten.cumsum: reduction_rule})
    assert analysis.uncounted_ops == {} and analysis.layer("").global_


def test_registry_rejects_duplicates_and_non_ops() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        rf_rule(torch.ops.aten.convolution)(lambda node, field_of: None)
    with pytest.raises(TypeError):
        rf_rule("aten.convolution")(lambda node, field_of: None)  # type: ignore[arg-type]
    assert "aten.convolution" in RF_RULES and "aten.max_pool2d_with_indices" in RF_RULES


@pytest.mark.parametrize(
    "layout, shape, expected",
    [
        # channel shuffle: (N, C, H, W) -> (N, g, C/g, H, W) keeps H and W in their own dims
        (
            ((), ((-1, 116),), ((0, 28),), ((1, 28),)),
            (1, 2, 58, 28, 28),
            ((), ((-1, 2),), ((-1, 58),), ((0, 28),), ((1, 28),)),
        ),
        # one-unit axes follow into size-1 dims, and are dropped by a flatten
        (((), ((-1, 8),), ((0, 1),), ((1, 1),)), (1, 2, 4, 1, 1), ((), ((-1, 2),), ((-1, 4),), ((0, 1),), ((1, 1),))),
        (((), ((-1, 8),), ((0, 1),), ((1, 1),)), (1, 8), ((), ((-1, 8),))),
        # squeezing a one-unit H leaves W alone in its dim
        (((), ((-1, 3),), ((0, 1),), ((1, 20),)), (1, 3, 20), ((), ((-1, 3),), ((1, 20),))),
        # flatten for a linear layer merges C, H and W into one dim
        (((), ((-1, 8),), ((0, 3),), ((1, 4),)), (1, 96), ((), ((-1, 8), (0, 3), (1, 4)))),
        # a view that splits H: the outer factor keeps the axis, the inner 2 positions go to channels
        (((), ((-1, 8),), ((0, 4),), ((1, 4),)), (1, 8, 2, 8), ((), ((-1, 8),), ((0, 2),), ((-1, 2), (1, 4)))),
    ],
)
def test_views_carry_the_axes(layout, shape, expected) -> None:
    from convdoctor.analysis.rf._field import regroup

    found = regroup(layout, shape)
    assert found is not None and found[0] == expected
    assert found[1] == ({0: 2} if shape == (1, 8, 2, 8) else {})


def test_merging_a_split_axis_back_is_unknown_with_the_op_named() -> None:
    """(N, C, H, W) -> (N, C, H/2, 2, W) -> (N, C, H, W): the layout cannot follow; nothing is guessed."""
    model = Fn(lambda x, m: m["c"](m["c"](x).view(1, 2, 14, 2, 28).reshape(1, 2, 28, 28) * 2), c=conv(padding=1))
    a = analyze(capture(model, (torch.empty(1, 2, 28, 28, device="meta"),)))
    assert a.layers[0].uncounted is not None and a.layers[0].size == (None, None)
    assert a.uncounted_ops == {"aten.convolution": 1}  # the conv sliding over the re-merged dim
    assert "merges a spatial axis with others" in str(a.layers[0].uncounted)


def test_spatial_ops_behind_an_unknown_op_give_unknown_fields_not_an_error() -> None:
    """TResNet's failure mode: every conv sat behind an op without a rule, and rf said 'no spatial op'."""
    from convdoctor import receptive_field

    model = Fn(lambda x, m: m["c"](torch.roll(x, 1, 2)), c=conv(padding=1))
    report = receptive_field(model, (1, 2, 16, 16))
    assert report.uncounted_ops == {"aten.roll": 1}
    assert [f.code for f in report.findings if f.code == "RF_UNCOUNTED"] == ["RF_UNCOUNTED"]
    assert all(layer.size == (None, None) for layer in report.layers)
