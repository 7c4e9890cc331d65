"""Fold BatchNorm into the convolution before it (inference only).

In eval mode BatchNorm is the affine map ``y = (x - mean) / sqrt(var + eps) * gamma + beta``
per channel, so a convolution followed by it equals one convolution with weights scaled
by ``s = gamma / sqrt(var + eps)`` per output channel and bias ``(b - mean) * s + beta``
(``torch.nn.utils.fusion.fuse_conv_bn_weights``). The fused model does one op less per
pair and has no BatchNorm left to be in training mode.

A pair is folded only when the data flow proves it: the BatchNorm's input is exactly the
convolution's output, nothing else reads that output, and each module is called once.
The flow comes from convdoctor's op graph when an example input is given, else from a
``torch.fx`` symbolic trace (BatchNorm and convolution kept as leaves, so subclasses
from other packages are seen as the layers they are), else from adjacent children of
``nn.Sequential`` containers.

BatchNorm subclasses that do more than normalise, such as timm's ``BatchNormAct2d``
(normalise, then ``self.drop``, then ``self.act``), keep that extra behaviour: the
normalisation is folded and the layer becomes its remainder (``Sequential(drop, act)``).
A subclass whose forward convdoctor does not know is left unfolded, and
:func:`unfoldable_batchnorms` says why; replacing it with an identity would silently
drop whatever it adds.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .._compat import BatchNormBase, ConvBase, child_names
from ..graph import Graph

__all__ = ["find_conv_bn_pairs", "fuse_conv_bn", "unfoldable_batchnorms"]

Pair = tuple[str, str]


#: BatchNorm subclasses whose forward is ``batch_norm`` then ``self.drop`` then ``self.act``
#: (timm's norm-act layers; ``module.qualname``). Their remainder after folding is
#: ``Sequential(drop, act)``.
NORM_ACT_TYPES = frozenset({"timm.layers.norm_act.BatchNormAct2d", "timm.layers.norm_act.SyncBatchNormAct"})


def _qualname(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def _plain_bn(bn: nn.Module) -> bool:
    """A torch BatchNorm class, or a subclass that does not override ``forward``."""
    return type(bn).forward in (BatchNormBase.forward, nn.SyncBatchNorm.forward)


def unfoldable_batchnorms(model: nn.Module) -> dict[str, str]:
    """BatchNorm layers :func:`fuse_conv_bn` will not fold whatever precedes them, with the reason."""
    out = {}
    for path, m in model.named_modules():
        if not isinstance(m, BatchNormBase):
            continue
        if m.running_mean is None or m.running_var is None:
            out[path] = "no running statistics (track_running_stats=False): it normalises with batch statistics"
        elif not (_plain_bn(m) or _qualname(m) in NORM_ACT_TYPES):
            out[path] = (
                f"{_qualname(m)} overrides forward; what it does besides normalising is unknown, "
                "so folding could drop it"
            )
    return out


def _remainder(bn: nn.Module) -> nn.Module:
    """What stays of a folded BatchNorm layer: nothing, or a norm-act layer's drop and activation."""
    if _plain_bn(bn):
        return nn.Identity()
    drop, act = getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity())
    return nn.Sequential(drop, act)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, ConvBase)
        and isinstance(bn, BatchNormBase)
        and bn.running_mean is not None
        and bn.running_var is not None
        and (_plain_bn(bn) or _qualname(bn) in NORM_ACT_TYPES)
        and conv.out_channels == bn.num_features
        and not (conv.transposed and conv.groups > 1)
    )


def _fx_graph(model: nn.Module) -> Any:
    """``torch.fx`` graph of ``model`` with every convolution and BatchNorm kept a leaf.

    fx's default tracer only keeps ``torch.nn`` classes whole; it would trace into a
    subclass from another package (timm's ``BatchNormAct2d``) and hide the pair.
    """
    import torch.fx

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, (BatchNormBase, ConvBase)) or super().is_leaf_module(m, qualname)

    return Tracer().trace(model)


def _pairs_from_graph(model: nn.Module, example_input: Any, graph: Graph | None = None) -> list[Pair]:
    from ..capture.inputs import as_args
    from ..capture.trace import capture

    if graph is None:
        graph = capture(model, as_args(example_input), mode="eval")
    calls: dict[str, list[Any]] = {}
    for call in graph.calls:
        calls.setdefault(call.path, []).append(call)
    produced_by: dict[tuple[int, int], Any] = {}
    for call in graph.calls:  # completion order: the innermost module that made a value comes first
        if len(calls[call.path]) == 1 and len(call.outputs) == 1:
            produced_by.setdefault(call.outputs[0].producer, call)
    users = graph.consumers()
    model_outputs = {t.producer for t in graph.outputs}
    pairs = []
    for path, cs in calls.items():
        if len(cs) != 1 or not cs[0].inputs:
            continue
        bn_call = cs[0]
        src = bn_call.inputs[0].producer
        conv_call = produced_by.get(src)
        if conv_call is None or src in model_outputs:
            continue
        if all(bn_call.first <= u <= bn_call.last for u in users.get(src, [])):
            pairs.append((conv_call.path, path))
    return pairs


def _pairs_from_fx(model: nn.Module) -> list[Pair]:
    import torch.fx

    graph = _fx_graph(model)
    targets = [n.target for n in graph.nodes if n.op == "call_module"]
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or targets.count(node.target) != 1:
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and len(src.users) == 1
            and targets.count(src.target) == 1
        ):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _pairs_from_sequential(model: nn.Module) -> list[Pair]:
    pairs = []
    for path, m in model.named_modules():
        if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
            names = child_names(m)
            for a, b in itertools.pairwise(names):
                prefix = f"{path}." if path else ""
                pairs.append((prefix + a, prefix + b))
    return pairs


def find_conv_bn_pairs(model: nn.Module, example_input: Any = None, *, graph: Graph | None = None) -> list[Pair]:
    """The ``(conv_path, batchnorm_path)`` pairs that can be folded.

    Args:
        model: any module; it is not changed.
        example_input: an input the model accepts; with it the data flow comes from
            convdoctor's op graph (works for any model that runs), without it from
            ``torch.fx`` (fails on data-dependent control flow) or ``nn.Sequential`` order.
        graph: the op graph of ``model`` already captured (any batch size, any device: only
            which module feeds which is read), instead of capturing ``example_input``.

    Returns:
        Pairs in model order; each convolution's only reader is its BatchNorm.
    """
    try:
        if graph is not None or example_input is not None:
            found = _pairs_from_graph(model, example_input, graph)
        else:
            found = _pairs_from_fx(model)
    except Exception:  # fx cannot trace every model, capture every input: fall back to containers
        found = _pairs_from_sequential(model)
    return _foldable_pairs(model, found)


def _foldable_pairs(model: nn.Module, pairs: Iterable[Pair]) -> list[Pair]:
    """The pairs that name a convolution and a BatchNorm of ``model`` that can be folded."""
    modules = dict(model.named_modules())
    return [(c, b) for c, b in pairs if c in modules and b in modules and _foldable(modules[c], modules[b])]


def fuse_conv_bn(model: nn.Module, example_input: Any = None, *, pairs: Sequence[Pair] | None = None) -> nn.Module:
    """A copy of ``model`` in eval mode with every foldable BatchNorm folded into its convolution.

    Answers ``BN_TRAIN_MODE`` (a folded BatchNorm has no training mode left) and
    ``FUSION_MISMATCH`` (``convdoctor.audit(model, checks=["fusion"])`` compares the two).
    The input model is never changed. Folding uses the running statistics, so the copy
    is for inference only: it is returned in eval mode.

    Args:
        model: any module.
        example_input: optional input; lets convdoctor find pairs in models ``torch.fx``
            cannot trace (see :func:`find_conv_bn_pairs`).
        pairs: the pairs :func:`find_conv_bn_pairs` returned for this model, instead of
            finding them again. Each must still name a convolution and a BatchNorm that can
            be folded; that the convolution's only reader is its BatchNorm is taken as given.

    Returns:
        The fused copy; folded BatchNorms are replaced by ``nn.Identity`` (a norm-act
        layer by ``Sequential(drop, act)``). Layers left unfolded, and why:
        :func:`unfoldable_batchnorms`.
    """
    pairs = find_conv_bn_pairs(model, example_input) if pairs is None else _foldable_pairs(model, pairs)
    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        for conv_path, bn_path in pairs:
            conv, bn = fused.get_submodule(conv_path), fused.get_submodule(bn_path)
            assert isinstance(conv, ConvBase) and isinstance(bn, BatchNormBase)  # find_conv_bn_pairs checked
            assert bn.running_mean is not None and bn.running_var is not None
            new_conv = copy.deepcopy(conv)
            weight, bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight,
                bn.bias,
                transpose=conv.transposed,
            )
            new_conv.weight, new_conv.bias = weight, bias
            fused.set_submodule(conv_path, new_conv)
            fused.set_submodule(bn_path, _remainder(bn))
    return fused
