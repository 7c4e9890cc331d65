"""Layer alternatives (the ``layers`` verb): exact params and MACs of each way to map channels.

:func:`layer_alternatives` builds each candidate layer (standard, depthwise-separable,
strided, conv + pooling, stacked 3x3) as a real module and inspects it, so every figure is
what ``inspect`` would report for that layer in a model.
"""

from __future__ import annotations

import math

from torch import nn

from ..errors import UsageError
from ..inspect import inspect
from ..results.layers import LayerOption


def _option(name: str, module: nn.Module, shape: tuple[int, ...], note: str) -> LayerOption:
    report = inspect(module, shape)
    return LayerOption(name, report.totals["params"], report.totals["macs"], report.output_shapes[0], note)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False)


def layer_alternatives(c_in: int, c_out: int, kernel: int = 3, size: int = 28) -> list[LayerOption]:
    """Params and MACs of the usual ways to map ``c_in -> c_out`` channels at ``size x size``.

    Bias-free convolutions (BatchNorm follows in practice), padding ``k // 2``.

    Args:
        c_in: input channels.
        c_out: output channels.
        kernel: kernel size k.
        size: input height and width.

    Returns:
        Standard kxk, depthwise-separable, and for downsampling a strided kxk conv and a kxk
        conv followed by 2x2 max-pooling; for k >= 5 also the stack of 3x3 convs with the same field.

    Raises:
        UsageError: non-positive sizes or channels.
    """
    if min(c_in, c_out, kernel, size) <= 0:
        raise UsageError("channels, kernel and size must be positive")
    shape = (1, c_in, size, size)
    options = [
        _option(f"standard {kernel}x{kernel}", _conv(c_in, c_out, kernel), shape, "full kxk mixing of all channels"),
        _option(
            "depthwise-separable",
            nn.Sequential(_conv(c_in, c_in, kernel, groups=c_in), _conv(c_in, c_out, 1)),
            shape,
            f"{kernel}x{kernel} depthwise then 1x1 pointwise (MobileNet)",
        ),
        _option(
            f"strided {kernel}x{kernel} (stride 2)",
            _conv(c_in, c_out, kernel, stride=2),
            shape,
            "downsamples while it convolves: a quarter of the MACs",
        ),
        _option(
            f"{kernel}x{kernel} + 2x2 max-pool",
            nn.Sequential(_conv(c_in, c_out, kernel), nn.MaxPool2d(2)),
            shape,
            "convolves at full resolution, then downsamples",
        ),
    ]
    if kernel >= 5:
        n = math.ceil((kernel - 1) / 2)
        stack = nn.Sequential(_conv(c_in, c_out, 3), *[_conv(c_out, c_out, 3) for _ in range(n - 1)])
        options.append(
            _option(f"{n} stacked 3x3", stack, shape, f"same {2 * n + 1}-pixel field, {n - 1} more non-linearities")
        )
    return options
