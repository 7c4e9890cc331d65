"""Reading and lowering PT2E graphs: export with a dynamic batch, x86 lowering, what ran where.

Private helpers of :mod:`convdoctor.quant.pt2e`. The lowering mirrors torchao 0.18's
``lower_pt2e_quantized_to_x86`` (re-export, decompose CompositeImplicitAutograd ops only,
``aten.t`` -> ``permute``, inductor freezing passes, constant folding), but keeps the batch
dimension dynamic where torchao's re-exports with the example's static shapes. The freezing
passes are inductor internals (``torch._inductor``), the same ones torchao calls, reached
through :mod:`convdoctor._compat`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import torch
from torch import nn

from .._compat import inductor_constant_fold, inductor_freezing_passes, is_cia_op, op_schema

log = logging.getLogger(__name__)

#: Ops that only convert between float and int8: neither "int8 compute" nor "float compute".
_QDQ_NAMESPACE = "quantized_decomposed"
#: Weighted aten ops (what the x86 quantizer may annotate; transposed convs it leaves in float).
_WEIGHTED = {
    "conv1d",
    "conv2d",
    "conv3d",
    "convolution",
    "linear",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
}


def export_model(
    model: nn.Module, example: tuple[torch.Tensor, ...], dynamic: bool, strict: bool = False
) -> tuple[Any, bool]:
    """``torch.export`` with a dynamic batch dim when asked and the model allows it, else static.

    Returns:
        The ExportedProgram and whether its batch dimension is dynamic.
    """
    if dynamic:
        batch = torch.export.Dim("batch", min=1)
        shapes = tuple({0: batch} for _ in example)
        try:
            return torch.export.export(model, example, dynamic_shapes=shapes, strict=strict), True
        except Exception as exc:  # noqa: BLE001 - e.g. a hard-coded batch in a view: fall back to the example's shape
            log.info("dynamic batch export failed (%s); exporting with static shapes", exc)
    return torch.export.export(model, example, strict=strict), False


def export_for_quantization(model: nn.Module, example: tuple[torch.Tensor, ...]) -> tuple[Any, bool]:
    """Export for ``prepare_pt2e``: strict (dynamo) first, non-strict if dynamo cannot trace the model.

    Strict first because the x86 quantizer groups nodes into patterns by their
    ``source_fn_stack``, which only strict export records, one entry per call. Non-strict
    export leaves it empty and torch falls back to the module path, merging every call of
    a reused module (torchvision's ResNet calls one ``self.relu`` twice per block) into
    one partition that the quantizer rejects ("more than one output node").

    Returns:
        The ExportedProgram and whether its batch dimension is dynamic.

    Raises:
        Exception: the non-strict export's error when both fail.
    """
    try:
        return export_model(model, example, dynamic=True, strict=True)
    except Exception as exc:  # noqa: BLE001 - dynamo cannot trace every model: try the non-strict tracer
        log.info("strict export failed (%s); trying non-strict export", exc)
    return export_model(model, example, dynamic=True, strict=False)


def drop_unused_attrs(gm: torch.fx.GraphModule) -> None:
    """Delete parameters and buffers no node reads (the fp32 weights convert_pt2e leaves behind)."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            owner_path, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner_path) if owner_path else gm, attr)


def post_autograd_decompositions() -> dict[Any, Any]:
    """torchao's lowering table: decompose only CompositeImplicitAutograd ops.

    Anything more would break up the quantized patterns the freezing passes match.
    """
    table = torch.export.default_decompositions()
    for op in list(table):
        if not is_cia_op(op):
            del table[op]
    return dict(table)


def lower_x86(reference: nn.Module, example: tuple[torch.Tensor, ...], dynamic: bool) -> nn.Module:
    """Replace q/dq + fp32 op patterns by oneDNN int8 kernels (torchao's x86 lowering, dynamic batch)."""
    with torch.no_grad():
        program, _ = export_model(reference, example, dynamic, strict=True)
        lowered: torch.fx.GraphModule = program.run_decompositions(post_autograd_decompositions()).module()
        graph = lowered.graph
        for node in list(graph.nodes):  # the fusion patterns expect permute, not t
            if node.target == torch.ops.aten.t.default:
                with graph.inserting_before(node):
                    perm = graph.call_function(torch.ops.aten.permute.default, args=(node.args[0], [1, 0]))
                node.replace_all_uses_with(perm)
                graph.erase_node(node)
        lowered.recompile()
        inductor_freezing_passes(lowered, example)
        inductor_constant_fold(lowered)
        if dynamic:
            repack_conv_weights(lowered, reference, example)
    return lowered


def _op_args(node: torch.fx.Node) -> dict[str, Any]:
    """An op node's arguments by schema name."""
    schema = op_schema(node.target)
    names = [a.name for a in schema.arguments] if schema is not None else []
    return {**dict(zip(names, node.args)), **node.kwargs}


class _ConvInputShapes(torch.fx.Interpreter):
    """Runs a lowered graph and records the activation shape each int8 conv receives."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.shapes: dict[torch.fx.Node, list[int]] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        if n.op == "call_function" and op_name(n).startswith("onednn.qconv"):
            args, _ = self.fetch_args_kwargs_from_env(n)
            self.shapes[n] = list(args[0].shape)
        return super().run_node(n)


def _int8_weights(reference: nn.Module) -> dict[str, torch.Tensor]:
    """Weight dequantize scale attr -> int8 weight tensor, from the reference graph."""
    out: dict[str, torch.Tensor] = {}
    for node in getattr(reference, "graph", torch.fx.Graph()).nodes:
        if node.op == "call_function" and op_name(node).startswith(f"{_QDQ_NAMESPACE}.dequantize_per_channel"):
            weight, scale = node.args[0], node.args[1]
            if isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and isinstance(scale, torch.fx.Node):
                out[str(scale.target)] = getattr(reference, str(weight.target))
    return out


def repack_conv_weights(lowered: torch.fx.GraphModule, reference: nn.Module, example: tuple[torch.Tensor, ...]) -> int:
    """Re-prepack each int8 conv weight for the activation shape it really gets.

    With a dynamic batch the x86 fusion pass cannot see the activation shape and
    prepacks with ``x_shape=None``; oneDNN then picks a generic weight layout and every
    call pays about 1 ms re-laying it out (measured: 1.2 ms vs 35 us for a 48->48 3x3
    conv at 4x4). The layout depends on channels and spatial size, not on the batch, so
    prepacking for the example's shape is right for every batch size.

    Returns:
        How many weights were re-packed.
    """
    recorder = _ConvInputShapes(lowered)
    recorder.run(*example)
    weights = _int8_weights(reference)
    repacked = 0
    for node, x_shape in recorder.shapes.items():
        a = _op_args(node)
        packed, w_scale = a["qw"], a["w_scale"]
        if not (isinstance(packed, torch.fx.Node) and isinstance(w_scale, torch.fx.Node)):
            continue
        qw = weights.get(str(w_scale.target))
        if qw is None or any(isinstance(a[k], torch.fx.Node) for k in ("x_scale", "x_zero_point")):
            continue
        new = torch.ops.onednn.qconv_prepack(
            qw,
            getattr(lowered, str(w_scale.target)),
            a["x_scale"],
            a["x_zero_point"],
            a["stride"],
            a["padding"],
            a["dilation"],
            a["groups"],
            x_shape,
        )
        setattr(lowered, str(packed.target), new)
        repacked += 1
    return repacked


def innermost_module(node: torch.fx.Node) -> str | None:
    """Path of the innermost module an exported node came from (``nn_module_stack``), if recorded."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return str(path)


def op_name(node: torch.fx.Node) -> str:
    """``namespace.op.overload`` (``aten.conv2d.default``) for an op node."""
    return str(node.target)


def weight_scale_attr(node: torch.fx.Node) -> str | None:
    """The weight's dequantize scale attribute when ``node``'s weight is int8, else None."""
    weight = node.args[1] if len(node.args) > 1 else None
    if not isinstance(weight, torch.fx.Node) or weight.op != "call_function":
        return None
    if not op_name(weight).startswith(f"{_QDQ_NAMESPACE}.dequantize"):
        return None
    scale = weight.args[1] if len(weight.args) > 1 else None
    return str(scale.target) if isinstance(scale, torch.fx.Node) and scale.op == "get_attr" else ""


def converted_layers(converted: torch.fx.GraphModule) -> tuple[dict[str, str | None], set[str]]:
    """Weighted ops of the reference graph: path -> weight scale attr (None: float), and all paths seen."""
    weighted: dict[str, str | None] = {}
    seen: set[str] = set()
    for node in converted.graph.nodes:
        path = innermost_module(node) if node.op == "call_function" else None
        if path is None:
            continue
        seen.add(path)
        parts = op_name(node).split(".")
        if len(parts) > 2 and parts[1] in _WEIGHTED:
            scale = weight_scale_attr(node)
            if weighted.get(path) is None:  # a shared module counts as int8 if any call is
                weighted[path] = scale
    return weighted, seen


def lowered_ops(lowered: nn.Module | None) -> tuple[dict[str, str], Counter[str], Counter[str]]:
    """Lowered graph: weight scale attr -> int8 kernel, int8 kernel counts, float op counts."""
    kernels: dict[str, str] = {}
    int8: Counter[str] = Counter()
    floats: Counter[str] = Counter()
    if not isinstance(lowered, torch.fx.GraphModule):
        return kernels, int8, floats
    for node in lowered.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        name = op_name(node)
        if name.startswith("onednn."):
            int8[name] += 1
            for arg in node.args:
                if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
                    kernels.setdefault(str(arg.target), name)
        elif not name.startswith((f"{_QDQ_NAMESPACE}.", "aten.sym_")):
            floats[name] += 1
    return kernels, int8, floats


def module_paths(graph_module: nn.Module) -> set[str]:
    """Every innermost module path that appears in a graph module's nodes."""
    graph = getattr(graph_module, "graph", None)
    return {p for n in (graph.nodes if graph is not None else []) if (p := innermost_module(n)) is not None}
