"""Activation bits per layer, chosen by running this CPU's int8 kernels both ways.

Where the kernels saturate (no VNNI: :mod:`.isa`), a u8 x s8 pair sum overflows int16 only when
both activations of a pair are large. How often that happens depends on the layer's input, not
on the CPU alone. A layer whose input has a high zero point (the image, a block output with no
ReLU after it: mobilenet_v2's expansion convs) sits near the top of the u8 range and saturates
badly; a layer after a ReLU mostly sees small values and saturates rarely or never. Quantizing
every activation to 7 bits (``reduce_range=True``) cures the first kind and doubles the grid
step of the second kind for nothing.

So each int8 conv and linear runs twice on one calibration batch, on the real oneDNN kernel:
with its 8-bit input, and with the 7-bit input its own observer gives (the histogram observer
picks its clipping range from the data whatever the bit width, so only the step differs). Each
output is compared with the float layer (fp32 input, the same int8 weights). The layer keeps the
width with the smaller error. Measured on mobilenet_v2 trained on the digits under
``ONEDNN_MAX_CPU_ISA=AVX512_CORE``: 17 of 53 layers take 7 bits (the stem and the expansion
convs: 8-bit error 3-22%, 7-bit 1-2%); the other 36 keep 8 bits (0.3-0.7% against 0.5-1.2%).

Nothing here runs on a CPU whose kernels are exact (VNNI, AMX): 8 bits is finer and exact there.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ._graph import innermost_module

__all__ = ["LayerBits", "activation_bits_by_layer", "measure_layer_bits", "with_7bit_inputs"]

log = logging.getLogger(__name__)

_U8_MAX, _U7_MAX = 255, 127
_CONVS = {
    torch.ops.aten.conv1d.default: F.conv1d,
    torch.ops.aten.conv2d.default: F.conv2d,
    torch.ops.aten.conv3d.default: F.conv3d,
}
_LINEAR = torch.ops.aten.linear.default
_CONV_DEFAULTS = (None, 1, 0, 1, 1)  # bias, stride, padding, dilation, groups


@dataclass(frozen=True)
class LayerBits:
    """One int8 layer's activation width and the measurement that chose it.

    Attributes:
        node: the weighted node's name in the exported graph (``conv2d_3``).
        layer: the module path it came from, ``""`` when export did not record one.
        error_8bit: relative L2 error of the layer's output with 8-bit input on this CPU's
            kernel, against the float layer with the same int8 weights; NaN when not measured.
        error_7bit: the same with 7-bit input; NaN when not measured.
        reason: why it was not measured (it then takes 7 bits, which cannot saturate), else ``""``.
    """

    node: str
    layer: str
    error_8bit: float
    error_7bit: float
    reason: str = ""

    @property
    def bits(self) -> int:
        """7 or 8: the width with the smaller measured error (7 when not measured)."""
        if self.reason or not self.error_8bit <= self.error_7bit:
            return 7
        return 8

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row (NaN becomes None)."""
        return {
            "node": self.node,
            "layer": self.layer,
            "bits": self.bits,
            "error_8bit": None if math.isnan(self.error_8bit) else self.error_8bit,
            "error_7bit": None if math.isnan(self.error_7bit) else self.error_7bit,
            "reason": self.reason,
        }


def _is(node: Any, name: str) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and name in str(node.target)


def _weighted_inputs(reference: torch.fx.GraphModule) -> dict[str, tuple[torch.fx.Node, torch.fx.Node]]:
    """Weighted node name -> (its activation's quantize node, its weight's dequantize node)."""
    out: dict[str, tuple[torch.fx.Node, torch.fx.Node]] = {}
    for node in reference.graph.nodes:
        if node.op != "call_function" or (node.target not in _CONVS and node.target != _LINEAR):
            continue
        dq, wdq = node.args[0], node.args[1]
        if _is(dq, "dequantize_per_tensor") and _is(dq.args[0], "quantize_per_tensor"):
            if _is(wdq, "dequantize_per_channel"):
                out[node.name] = (dq.args[0], wdq)
    return out


class _Inputs(torch.fx.Interpreter):
    """Runs the reference graph once, keeping the fp32 tensors that chosen quantize nodes receive."""

    def __init__(self, module: torch.fx.GraphModule, wanted: set[torch.fx.Node]) -> None:
        super().__init__(module)
        self.wanted = wanted
        self.seen: dict[torch.fx.Node, Any] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        if n in self.wanted:
            self.seen[n] = self.fetch_args_kwargs_from_env(n)[0][0]
        return super().run_node(n)


def _attr(module: torch.nn.Module, node: Any) -> Any:
    return getattr(module, str(node.target)) if isinstance(node, torch.fx.Node) and node.op == "get_attr" else node


def _conv_args(node: torch.fx.Node) -> tuple[list[int], list[int], list[int], int]:
    """stride, padding, dilation, groups of an ``aten.convNd`` node, as lists of the input's rank."""
    args: list[Any] = list(node.args[2:]) + list(_CONV_DEFAULTS[len(node.args) - 2 :])
    dims = {torch.ops.aten.conv1d.default: 1, torch.ops.aten.conv2d.default: 2}.get(node.target, 3)  # type: ignore[call-overload]

    def per_dim(v: Any) -> list[int]:
        values = [int(i) for i in v] if isinstance(v, (list, tuple)) else [int(v)]
        return values * dims if len(values) == 1 else values

    if isinstance(args[2], str):
        raise ValueError(f"padding={args[2]!r}")
    return per_dim(args[1]), per_dim(args[2]), per_dim(args[3]), int(args[4])


def _kernel_output(
    node: torch.fx.Node, x: torch.Tensor, scale: float, zp: int, qmax: int, w: torch.Tensor, w_scale: Any, w_zp: Any
) -> torch.Tensor:
    """The layer on oneDNN's int8 kernel: input quantized to 0..qmax, output in fp32, no bias."""
    xq = torch.ops.quantized_decomposed.quantize_per_tensor(x, scale, zp, 0, qmax, torch.uint8)
    w_zp = w_zp.to(torch.int64)
    if node.target == _LINEAR:
        packed = torch.ops.onednn.qlinear_prepack(w, list(x.shape))
        out: torch.Tensor = torch.ops.onednn.qlinear_pointwise(
            xq, scale, zp, packed, w_scale, w_zp, None, 1.0, 0, torch.float32, "none", [], ""
        )
        return out
    stride, padding, dilation, groups = _conv_args(node)
    packed = torch.ops.onednn.qconv_prepack(w, w_scale, scale, zp, stride, padding, dilation, groups, list(x.shape))
    if xq.dim() == 4:
        xq = xq.contiguous(memory_format=torch.channels_last)  # the layout the lowered graph runs
    out = torch.ops.onednn.qconv_pointwise(
        xq,
        scale,
        zp,
        packed,
        w_scale,
        w_zp,
        None,
        stride,
        padding,
        dilation,
        groups,
        1.0,
        0,
        torch.float32,
        "none",
        [],
        "",
    )
    return out


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = float(b.norm())
    return float((a - b).norm()) / norm if norm > 0 else float((a - b).norm())


def _input_observer(prepared: torch.fx.GraphModule, name: str) -> Any:
    """The observer module on ``name``'s activation input in the prepared graph, or None."""
    node = next((n for n in prepared.graph.nodes if n.name == name), None)
    arg = node.args[0] if node is not None and node.args else None
    if isinstance(arg, torch.fx.Node) and arg.op == "call_module":
        return prepared.get_submodule(str(arg.target))
    return None


def _qparams_7bit(observer: Any) -> tuple[float, int]:
    narrow = copy.deepcopy(observer)
    narrow.quant_max = _U7_MAX
    scale, zp = narrow.calculate_qparams()
    return float(scale), int(zp)


def _measure_one(
    node: torch.fx.Node, x: torch.Tensor, quant: torch.fx.Node, wdq: torch.fx.Node, reference: Any, observer: Any
) -> tuple[float, float]:
    w, w_scale, w_zp = (_attr(reference, a) for a in wdq.args[:3])
    w_float = torch.ops.quantized_decomposed.dequantize_per_channel(w, w_scale, w_zp, *wdq.args[3:])
    if node.target == _LINEAR:
        exact = F.linear(x, w_float)
    else:
        stride, padding, dilation, groups = _conv_args(node)
        exact = _CONVS[node.target](x, w_float, None, stride, padding, dilation, groups)  # type: ignore[index]
    scale8, zp8 = float(_attr(reference, quant.args[1])), int(_attr(reference, quant.args[2]))
    scale7, zp7 = _qparams_7bit(observer)
    e8 = _relative(_kernel_output(node, x, scale8, zp8, _U8_MAX, w, w_scale, w_zp), exact)
    e7 = _relative(_kernel_output(node, x, scale7, zp7, _U7_MAX, w, w_scale, w_zp), exact)
    return e8, e7


def measure_layer_bits(
    prepared: torch.fx.GraphModule, reference: torch.fx.GraphModule, batch: torch.Tensor
) -> tuple[LayerBits, ...]:
    """Measure each int8 layer with 8-bit and 7-bit input on this CPU's kernels (see the module docstring).

    Args:
        prepared: the calibrated model from ``prepare_pt2e`` (its observers give the 7-bit grids;
            it is not run, so calibration is not disturbed).
        reference: ``convert_pt2e`` of a copy of ``prepared`` with 8-bit activations.
        batch: one calibration batch.

    Returns:
        One row per int8 conv/linear, in graph order.
    """
    layers = _weighted_inputs(reference)
    recorder = _Inputs(reference, {q for q, _ in layers.values()})
    with torch.no_grad():
        recorder.run(batch)
        nodes = {n.name: n for n in reference.graph.nodes}
        rows = []
        for name, (quant, wdq) in layers.items():
            node, path = nodes[name], innermost_module(nodes[name]) or ""
            observer, x = _input_observer(prepared, name), recorder.seen.get(quant)
            if observer is None or not isinstance(x, torch.Tensor):
                rows.append(LayerBits(name, path, math.nan, math.nan, reason="its input was not observed"))
                continue
            try:
                e8, e7 = _measure_one(node, x, quant, wdq, reference, observer)
            except Exception as exc:  # noqa: BLE001 - a layer the kernel probe cannot run: 7 bits cannot saturate
                log.info("activation bits of %s not measured: %s", name, exc)
                rows.append(LayerBits(name, path, math.nan, math.nan, reason=f"not measured ({type(exc).__name__})"))
                continue
            rows.append(LayerBits(name, path, e8, e7))
    return tuple(rows)


def with_7bit_inputs(prepared: torch.fx.GraphModule, nodes: Iterable[str] | None) -> torch.fx.GraphModule:
    """A copy of the calibrated model whose chosen layers' input observers give 7-bit grids.

    ``nodes`` None narrows every uint8 activation observer (``reduce_range=True`` everywhere,
    the same grids as calibrating with torchao's 7-bit config: the observer's range search does
    not depend on the width). An observer shared by several layers narrows them all.
    """
    out = copy.deepcopy(prepared)
    if nodes is None:
        observers = [m for m in out.modules() if getattr(m, "dtype", None) == torch.uint8 and hasattr(m, "quant_max")]
    else:
        observers = [o for name in nodes if (o := _input_observer(out, name)) is not None]
    for observer in observers:
        setattr(observer, "quant_max", _U7_MAX)  # noqa: B010 - observers are untyped torchao modules
    return out


def activation_bits_by_layer(reference: torch.fx.GraphModule) -> dict[str, int]:
    """Module path -> activation bits (7 or 8) of each int8 conv/linear, read from the converted graph."""
    out: dict[str, int] = {}
    nodes = {n.name: n for n in reference.graph.nodes}
    for name, (quant, _) in _weighted_inputs(reference).items():
        path = innermost_module(nodes[name])
        quant_max = quant.args[4] if len(quant.args) > 4 else None
        if path is not None and isinstance(quant_max, int):
            out[path] = max(out.get(path, 0), 8 if quant_max > _U7_MAX else 7)
    return out
