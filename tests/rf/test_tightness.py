"""Tightness of the inexact receptive-field rules: the analytic outer bound may exceed the
autograd-measured field by at most the slack documented next to each rule.

Containment alone (bound >= measured) lets a bound several times too wide pass. Each case puts
one inexact op after a 3x3 stride-2 conv, so the op's input units are ``J = 2`` pixels apart
and carry a 3-pixel field; the op's slack, stated in its own input units in
``convdoctor/analysis/rf/window_rules.py`` / ``shape_rules.py``, is ``J`` times that in pixels.
The measured field is the central output unit's (gradient method, Araujo et al. 2019).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from convdoctor.rf import receptive_field

J = 2  #: jump at the inexact op's input, in pixels (the stride-2 conv in front)
SIDE = 32


def _transposed(k: int, s: int, d: int) -> tuple[nn.Module, Fraction]:
    """Strided transposed conv: ``2 (s - 1) d / s`` input units (the extreme taps a unit really
    reads lie within ``s - 1`` taps of each kernel end)."""
    return nn.ConvTranspose2d(2, 2, k, stride=s, padding=1, dilation=d), Fraction(2 * (s - 1) * d, s)


def _adaptive(m: int, kind: type[nn.Module] = nn.AdaptiveAvgPool2d) -> tuple[nn.Module, Fraction]:
    """Uneven adaptive pooling from n = 16 units to m: ``2 (q - 1) / q`` with ``n / m = p / q``."""
    q = Fraction(SIDE // J, m).denominator
    return kind(m), Fraction(2 * (q - 1), q)


def _upsample(mode: str, **kw: object) -> tuple[nn.Module, Fraction]:
    """Interpolation at non-integer source positions: 1 input unit (the bound is the continuous
    tap interval, the field the integer units inside it)."""
    return nn.Upsample(mode=mode, **kw), Fraction(1)


CASES = {
    "transposed k4 s2": lambda: _transposed(4, 2, 1),
    "transposed k3 s2": lambda: _transposed(3, 2, 1),
    "transposed k5 s3 d2": lambda: _transposed(5, 3, 2),
    "adaptive avg 16->7": lambda: _adaptive(7),
    "adaptive avg 16->5": lambda: _adaptive(5),
    "adaptive max 16->3": lambda: _adaptive(3, nn.AdaptiveMaxPool2d),
    "nearest x2": lambda: _upsample("nearest", scale_factor=2),
    "nearest x3": lambda: _upsample("nearest", scale_factor=3),
    "nearest 16->23": lambda: _upsample("nearest", size=23),
    "bilinear x2": lambda: _upsample("bilinear", scale_factor=2),
    "bilinear 16->23": lambda: _upsample("bilinear", size=23),
    "bilinear 16->23 aligned": lambda: _upsample("bilinear", size=23, align_corners=True),
    "bicubic x2": lambda: _upsample("bicubic", scale_factor=2),
}


def _fields(model: nn.Module, channels: int) -> tuple[tuple[Fraction, ...], tuple[int, ...]]:
    shape = (1, channels, SIDE, SIDE)
    bound = receptive_field(model, shape, layer="1").layers[0]
    measured = receptive_field(model, shape, method="gradient", layer="1").layers[0]
    assert not any(measured.clipped), "the measured field must fit inside the input"
    return tuple(Fraction(s) for s in bound.size), measured.size


@pytest.mark.parametrize("case", list(CASES))
def test_bound_is_within_the_documented_slack(case: str) -> None:
    torch.manual_seed(0)
    op, slack_units = CASES[case]()
    bound, measured = _fields(nn.Sequential(nn.Conv2d(2, 2, 3, stride=2, padding=1), op), 2)
    for b, m in zip(bound, measured):
        assert m <= b <= m + slack_units * J, f"{case}: bound {b} vs measured {m}, slack {slack_units * J} px"


def test_pixel_shuffle_bound_is_within_r_minus_1_over_r() -> None:
    r = 2
    model = nn.Sequential(nn.Conv2d(2, 2 * r * r, 3, stride=2, padding=1), nn.PixelShuffle(r))
    bound, measured = _fields(model, 2)
    for b, m in zip(bound, measured):
        assert m <= b <= m + Fraction(r - 1, r) * J


class SliceOfCat(nn.Module):
    """``cat([3x3 branch, 7x7 branch])[:, :2]``: the slice holds only the 3x3 branch."""

    def __init__(self) -> None:
        super().__init__()
        self.narrow = nn.Conv2d(2, 2, 3, padding=1)
        self.wide = nn.Conv2d(2, 2, 7, padding=3)
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.narrow(x), self.wide(x)], 1)[:, :2])


def test_channel_slice_of_a_concat_is_within_the_parts_spread() -> None:
    """Slack: the widest part's field minus the narrowest part's (here 7 - 3 = 4 px)."""
    shape = (1, 2, SIDE, SIDE)
    bound = receptive_field(SliceOfCat(), shape, layer="head").layers[0]
    measured = receptive_field(SliceOfCat(), shape, method="gradient", layer="head").layers[0]
    assert measured.size == (3, 3)
    for b, m in zip(bound.size, measured.size):
        assert m <= b <= m + (7 - 3)
