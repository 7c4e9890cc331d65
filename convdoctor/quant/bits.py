"""Grid widths per layer on saturating CPUs, chosen by running this CPU's int8 kernels each way.

Where the kernels saturate (no VNNI: :mod:`.isa`), a u8 x s8 pair sum overflows int16 only when
both products of a pair are large. How often that happens depends on the layer's input, not on
the CPU alone. A layer whose input has a high zero point (the image, a block output with no ReLU
after it: mobilenet_v2's expansion convs) sits near the top of the u8 range and saturates badly;
a layer after a ReLU mostly sees small values, and a depthwise conv sums no pairs across
channels. Quantizing every activation to 7 bits (``reduce_range=True``) cures the first kind and
doubles the grid step of the others for nothing.

Two grids keep every pair sum within int16: 7-bit activations (0..127 x 128 x 2 = 32,512) and
7-bit weights (255 x 64 x 2 = 32,640). So each int8 conv and linear runs three times on about
10^6 input values drawn from every calibration batch, on the real oneDNN kernel: 8-bit
activations and weights, 7-bit activations, 7-bit weights. The grids come from the layer's own
observers: a histogram observer picks its clipping range from the data whatever the width, and
a min-max weight observer its scale, so only the step differs from what calibration would give.
Each output is compared with the fp32 layer (fp32 input, fp32 weights), and the layer keeps the
grid with the smallest error, 8-bit on a tie.

Measured on mobilenet_v2 trained on the digits under ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2`` (docs/quantization.md): the expansion convs, fed by block outputs with no
ReLU, measure 1.4-21.4% with 8 bits, 1.1-2.1% with 7-bit activations and 0.9-1.4% with 7-bit
weights; the stem and the classifier are best with 7-bit activations; the 34 depthwise and
projection convs keep 8 bits (0.4-0.9%).

Nothing here runs on a CPU whose kernels are exact (VNNI, AMX): 8 bits is finer and exact there.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..capture.choices import Choice
from ._graph import innermost_module

__all__ = ["Grid", "LayerBits", "grids_by_layer", "measure_layer_bits", "measurement_batch", "narrowed"]

log = logging.getLogger(__name__)

_U8_MAX, _U7_MAX = 255, 127
_S8, _S7 = (-128, 127), (-64, 63)
_CONVS = {
    torch.ops.aten.conv1d.default: F.conv1d,
    torch.ops.aten.conv2d.default: F.conv2d,
    torch.ops.aten.conv3d.default: F.conv3d,
}
_RANK = {torch.ops.aten.conv1d.default: 1, torch.ops.aten.conv2d.default: 2, torch.ops.aten.conv3d.default: 3}
_LINEAR = torch.ops.aten.linear.default
_CONV_DEFAULTS = (None, 1, 0, 1, 1)  # bias, stride, padding, dilation, groups
#: Input elements the measurement runs on, drawn from every calibration batch: every sample of small
#: inputs (3 batches of 64 digits at 3x32x32 are 589,824), 7 samples at 3x224x224. Each layer still
#: sees ~10^5 values or more, and resnet50 at 224 measures in 2.2 s instead of 12.4 s with 32
#: samples (2 threads, AVX2 cap).
MEASURE_INPUT_ELEMENTS = 2**20
#: At least this many samples, whatever their size.
MEASURE_MIN_SAMPLES = 4


class Grid(Choice):
    """The int8 grids of one layer: what its u8 activations and s8 weights may span."""

    FULL = "8-bit"  #: u8 0..255 x s8 -128..127: the finest; saturates where pairs are large
    SEVEN_BIT_ACTIVATIONS = "7-bit activations"  #: u8 0..127: every pair sum fits int16
    SEVEN_BIT_WEIGHTS = "7-bit weights"  #: s8 -64..63: every pair sum fits int16

    @property
    def activation_max(self) -> int:
        """The activation grid's top value."""
        return _U7_MAX if self is Grid.SEVEN_BIT_ACTIVATIONS else _U8_MAX

    @property
    def weight_range(self) -> tuple[int, int]:
        """The weight grid's (min, max)."""
        return _S7 if self is Grid.SEVEN_BIT_WEIGHTS else _S8


@dataclass(frozen=True)
class LayerBits:
    """One int8 layer's grids and the measurement that chose them.

    Attributes:
        node: the weighted node's name in the exported graph (``conv2d_3``).
        layer: the module path it came from, ``""`` when export did not record one.
        errors: relative L2 error of the layer's output on this CPU's kernel against the fp32
            layer, per grid tried; empty when not measured.
        reason: why it was not measured (it then takes 7-bit activations, which cannot
            saturate), else ``""``.
    """

    node: str
    layer: str
    errors: Mapping[Grid, float]
    reason: str = ""

    @property
    def grid(self) -> Grid:
        """The grid with the smallest measured error (8-bit on a tie; 7-bit activations when not measured)."""
        if self.reason or not self.errors:
            return Grid.SEVEN_BIT_ACTIVATIONS
        best: Grid = min(self.errors, key=lambda g: (self.errors[g], g is not Grid.FULL))
        return best

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        return {
            "node": self.node,
            "layer": self.layer,
            "grid": str(self.grid),
            "errors": {str(g): e for g, e in self.errors.items()},
            "reason": self.reason,
        }


class _Observed(torch.fx.Interpreter):
    """Runs a copy of the calibrated model once, keeping what each weighted node's observers receive."""

    def __init__(self, module: torch.fx.GraphModule, wanted: set[torch.fx.Node]) -> None:
        super().__init__(module)
        self.wanted = wanted
        self.seen: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        if n in self.wanted:
            self.seen[n] = out  # an observer returns its input unchanged
        return out


def _observer(prepared: torch.fx.GraphModule, arg: Any) -> Any:
    if isinstance(arg, torch.fx.Node) and arg.op == "call_module":
        return prepared.get_submodule(str(arg.target))
    return None


def _weighted(prepared: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """Convs and linears whose activation and weight both pass an observer (the int8 ones)."""
    return [
        n
        for n in prepared.graph.nodes
        if n.op == "call_function"
        and (n.target in _CONVS or n.target == _LINEAR)
        and len(n.args) > 1
        and _observer(prepared, n.args[0]) is not None
        and _observer(prepared, n.args[1]) is not None
    ]


def _conv_args(node: torch.fx.Node) -> tuple[list[int], list[int], list[int], int]:
    """stride, padding, dilation, groups of an ``aten.convNd`` node, as lists of the input's rank."""
    args: list[Any] = list(node.args[2:]) + list(_CONV_DEFAULTS[len(node.args) - 2 :])
    dims = _RANK[node.target]  # type: ignore[index]

    def per_dim(v: Any) -> list[int]:
        values = [int(i) for i in v] if isinstance(v, (list, tuple)) else [int(v)]
        return values * dims if len(values) == 1 else values

    if isinstance(args[2], str):
        raise ValueError(f"padding={args[2]!r}")
    return per_dim(args[1]), per_dim(args[2]), per_dim(args[3]), int(args[4])


def _qparams(observer: Any, low: int, high: int) -> tuple[Any, Any]:
    narrow = copy.deepcopy(observer)
    narrow.quant_min, narrow.quant_max = low, high
    return narrow.calculate_qparams()  # type: ignore[no-any-return]


def _on_kernel(node: torch.fx.Node, x: torch.Tensor, w: torch.Tensor, act: Any, wobs: Any, grid: Grid) -> torch.Tensor:
    """The layer on oneDNN's int8 kernel with ``grid``'s widths: fp32 output, no bias."""
    scale, zp = (float(v) for v in _qparams(act, 0, grid.activation_max))
    low, high = grid.weight_range
    w_scale, w_zp = _qparams(wobs, low, high)
    w_zp = w_zp.to(torch.int64)
    qw = torch.ops.quantized_decomposed.quantize_per_channel(w, w_scale, w_zp, 0, low, high, torch.int8)
    xq = torch.ops.quantized_decomposed.quantize_per_tensor(x, scale, int(zp), 0, grid.activation_max, torch.uint8)
    if node.target == _LINEAR:
        packed = torch.ops.onednn.qlinear_prepack(qw, list(x.shape))
        out: torch.Tensor = torch.ops.onednn.qlinear_pointwise(
            xq, scale, int(zp), packed, w_scale, w_zp, None, 1.0, 0, torch.float32, "none", [], ""
        )
        return out
    stride, padding, dilation, groups = _conv_args(node)
    packed = torch.ops.onednn.qconv_prepack(
        qw, w_scale, scale, int(zp), stride, padding, dilation, groups, list(x.shape)
    )
    if xq.dim() == 4:
        xq = xq.contiguous(memory_format=torch.channels_last)  # the layout the lowered graph runs
    post: tuple[Any, ...] = (1.0, 0, torch.float32, "none", [], "")  # fp32 output, unscaled, no fused op
    out = torch.ops.onednn.qconv_pointwise(
        xq, scale, int(zp), packed, w_scale, w_zp, None, stride, padding, dilation, groups, *post
    )
    return out


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = float(b.norm())
    return float((a - b).norm()) / norm if norm > 0 else float((a - b).norm())


def _measure_one(node: torch.fx.Node, x: torch.Tensor, w: torch.Tensor, act: Any, wobs: Any) -> dict[Grid, float]:
    if node.target == _LINEAR:
        exact = F.linear(x, w)
    else:
        stride, padding, dilation, groups = _conv_args(node)
        exact = _CONVS[node.target](x, w, None, stride, padding, dilation, groups)  # type: ignore[index]
    return {grid: _relative(_on_kernel(node, x, w, act, wobs, grid), exact) for grid in list(Grid)}


def measurement_batch(batches: Sequence[torch.Tensor], size: int | None = None) -> torch.Tensor:
    """About :data:`MEASURE_INPUT_ELEMENTS` input values, drawn evenly from every calibration batch.

    A calibration loader is often unshuffled (an ``ImageFolder`` sorted by class): the first
    samples of one batch would be one class. So the measurement takes the first samples of each
    batch in turn, the same number from each.

    Args:
        batches: the calibration batches (same sample shape).
        size: the exact number of samples (a program exported with a static batch size); None
            chooses it from the sample size (never fewer than :data:`MEASURE_MIN_SAMPLES`).
    """
    available = sum(int(b.shape[0]) for b in batches)
    if size is None:
        per_sample = max(1, batches[0][0].numel()) if available else 1
        size = max(MEASURE_MIN_SAMPLES, -(-MEASURE_INPUT_ELEMENTS // per_sample))
    size = min(size, available)
    per_batch = -(-size // max(1, len(batches)))
    taken = [b[:per_batch] for b in batches]
    while sum(int(t.shape[0]) for t in taken) < size:  # short batches: take more from the others
        per_batch += 1
        taken = [b[:per_batch] for b in batches]
    return torch.cat(taken)[:size]


def measure_layer_bits(prepared: torch.fx.GraphModule, batch: torch.Tensor) -> tuple[LayerBits, ...]:
    """Measure each int8 layer with each :class:`Grid` on this CPU's kernels (see the module docstring).

    Args:
        prepared: the calibrated model from ``prepare_pt2e``. A copy runs the batch, so
            calibration is not disturbed; the observers give the grids.
        batch: the samples to measure on (:func:`measurement_batch`).

    Returns:
        One row per int8 conv/linear, in graph order.
    """
    layers = _weighted(prepared)
    run = copy.deepcopy(prepared)
    for n in run.graph.nodes:  # observers pass their input through: identities are as exact and far cheaper
        if hasattr(_observer(run, n), "calculate_qparams"):
            setattr(run, str(n.target), torch.nn.Identity())
    run.recompile()
    names = {n.name: n for n in run.graph.nodes}
    inputs = {names[n.name].args[0] for n in layers} | {names[n.name].args[1] for n in layers}
    recorder = _Observed(run, {a for a in inputs if isinstance(a, torch.fx.Node)})
    rows = []
    with torch.no_grad():
        recorder.run(batch)
        for node in layers:
            mine = names[node.name]
            x, w = recorder.seen.get(mine.args[0]), recorder.seen.get(mine.args[1])
            path = innermost_module(node) or ""
            if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor):
                rows.append(LayerBits(node.name, path, {}, reason="its input or weight was not observed"))
                continue
            act, wobs = _observer(prepared, node.args[0]), _observer(prepared, node.args[1])
            try:
                rows.append(LayerBits(node.name, path, _measure_one(node, x, w, act, wobs)))
            except Exception as exc:  # noqa: BLE001 - a layer the kernel probe cannot run: 7 bits cannot saturate
                log.info("int8 grids of %s not measured: %s", node.name, exc)
                rows.append(LayerBits(node.name, path, {}, reason=f"not measured ({type(exc).__name__})"))
    return tuple(rows)


def narrowed(prepared: torch.fx.GraphModule, grids: Mapping[str, Grid] | None) -> torch.fx.GraphModule:
    """A copy of the calibrated model whose observers give each layer's chosen grid.

    ``grids`` maps weighted node names to grids (absent: 8-bit); None narrows every uint8
    activation observer (``reduce_range=True`` everywhere, the same grids as calibrating with
    torchao's 7-bit config: the observer's range search does not depend on the width). An
    activation observer shared by several layers narrows them all.
    """
    out = copy.deepcopy(prepared)
    if grids is None:
        for m in out.modules():
            if getattr(m, "dtype", None) == torch.uint8 and hasattr(m, "quant_max"):
                setattr(m, "quant_max", _U7_MAX)  # noqa: B010 - observers are untyped torchao modules
        return out
    for node in _weighted(out):
        grid = grids.get(node.name, Grid.FULL)
        if grid is Grid.SEVEN_BIT_ACTIVATIONS:
            setattr(_observer(out, node.args[0]), "quant_max", _U7_MAX)  # noqa: B010
        elif grid is Grid.SEVEN_BIT_WEIGHTS:
            wobs = _observer(out, node.args[1])
            setattr(wobs, "quant_min", _S7[0])  # noqa: B010
            setattr(wobs, "quant_max", _S7[1])  # noqa: B010
    return out


def _is(node: Any, name: str) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and name in str(node.target)


def grids_by_layer(reference: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Module path -> (activation bits, weight bits), 7 or 8, of each int8 conv/linear, read from the
    converted graph (a saved program loads back with the same calls); empty for a module without a graph."""
    out: dict[str, tuple[int, int]] = {}
    graph = getattr(reference, "graph", None)
    for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
        if node.op != "call_function" or (node.target not in _CONVS and node.target != _LINEAR):
            continue
        dq, wdq, path = node.args[0], node.args[1], innermost_module(node)
        if path is None or not _is(dq, "dequantize_per_tensor") or not _is(wdq, "dequantize"):
            continue
        a_max = dq.args[4] if len(dq.args) > 4 else None
        w_max = wdq.args[5] if len(wdq.args) > 5 and "per_channel" in str(wdq.target) else None
        if isinstance(a_max, int):
            w_bits = 7 if isinstance(w_max, int) and w_max <= _S7[1] else 8
            out[path] = (8 if a_max > _U7_MAX else 7, w_bits)
    return out
