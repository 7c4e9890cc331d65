"""Static lints over the graph: ``lint(graph, ...) -> list[Finding]``.

``LINTS`` lists them; each reads only the graph (and the FLOP result where it needs it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..findings import Finding, make_finding
from ..graph import Graph, OpNode
from .data_dependent import data_dependence
from .flops import FlopResult

#: a conv kernel this large (on either axis) is a LARGE_KERNEL candidate.
LARGE_KERNEL_MIN = 5
#: input channels at or below this make a conv a "stem" on raw pixels: LARGE_KERNEL is info there.
STEM_MAX_IN_CHANNELS = 3
_BN_OPS = {"aten.native_batch_norm", "aten._native_batch_norm_legit", "aten._native_batch_norm_legit_no_training"}

#: lint(graph, flops, inference) where ``inference`` asks for the train-mode lints.
Lint = Callable[[Graph, FlopResult, bool], list[Finding]]
LINTS: dict[str, Lint] = {}


def _lint(name: str) -> Callable[[Lint], Lint]:
    def deco(fn: Lint) -> Lint:
        if name in LINTS:
            raise ValueError(f"lint {name} registered twice")
        LINTS[name] = fn
        return fn

    return deco


@_lint("train_mode")
def train_mode(graph: Graph, flops: FlopResult, inference: bool) -> list[Finding]:
    """BN_TRAIN_MODE / DROPOUT_TRAIN_MODE from the user's training flags (inference assumed)."""
    if not inference:
        return []
    bn = [m.path for m in graph.modules.values() if m.attrs.get("is_batchnorm") and m.training]
    drop = [
        m.path
        for m in graph.modules.values()
        if m.attrs.get("is_dropout") and m.training and float(m.attrs.get("p", 0) or 0) > 0
    ]
    out = []
    if bn:
        out.append(
            make_finding(
                "BN_TRAIN_MODE",
                f"{len(bn)} BatchNorm layer(s) are in training mode: at inference each batch would be normalised "
                "with its own statistics, so a sample's prediction depends on its batch.",
                evidence={"count": len(bn), "modules": bn[:20]},
                fix="Call model.eval() before inference (or serve convdoctor.fix.prepare_for_inference(model)); "
                "run `convdoctor audit` to measure the damage.",
                where=bn[0],
            )
        )
    if drop:
        out.append(
            make_finding(
                "DROPOUT_TRAIN_MODE",
                f"{len(drop)} dropout layer(s) are active: inference outputs would be random.",
                evidence={"count": len(drop), "modules": drop[:20]},
                fix="Call model.eval() before inference.",
                where=drop[0],
            )
        )
    return out


def stacked_3x3(c_in: int, c_out: int, groups: int, k: int) -> tuple[int, int]:
    """Number of stacked 3x3 convs with the same receptive field as a kxk one, and their weights.

    ``n`` stride-1 3x3 convs see ``2n + 1`` pixels, so ``n = ceil((k - 1) / 2)``; the first
    maps ``c_in -> c_out``, the others ``c_out -> c_out``, all with the same groups.
    """
    n = math.ceil((k - 1) / 2)
    return n, 9 * c_out * (c_in // groups) + (n - 1) * 9 * c_out * (c_out // groups)


@_lint("large_kernel")
def large_kernel(graph: Graph, flops: FlopResult, inference: bool) -> list[Finding]:
    """LARGE_KERNEL: a kxk conv (k >= 5) whose stacked-3x3 equivalent has fewer weights."""
    out = []
    for node in graph.nodes:
        if node.packet != "aten.convolution" or node.arg(6, "transposed", False):
            continue
        w, x, y = node.arg(1, "weight"), node.arg(0, "input"), node.outputs[0]
        ks = [int(k) for k in w.shape[2:]]
        if len(ks) != 2 or max(ks) < LARGE_KERNEL_MIN:
            continue
        groups = int(node.arg(8, "groups", 1))
        c_out, c_in = int(w.shape[0]), int(x.shape[1])
        big = w.numel
        n, small = stacked_3x3(c_in, c_out, groups, max(ks))
        if small >= big:
            continue
        positions = y.numel // c_out
        stem = c_in <= STEM_MAX_IN_CHANNELS
        out.append(
            make_finding(
                "LARGE_KERNEL",
                f"{ks[0]}x{ks[1]} conv {c_in}->{c_out} has {big:,} weights; {n} stacked 3x3 convs see the same "
                f"{max(ks)}-pixel field with {small:,} ({100 * (big - small) / big:.0f}% fewer) and {n - 1} more "
                "non-linearities."
                + (" It is the stem on raw pixels, where a large kernel is a common choice." if stem else ""),
                evidence={
                    "kernel": ks,
                    "in_channels": c_in,
                    "out_channels": c_out,
                    "groups": groups,
                    "params_kxk": big,
                    "stack_3x3_layers": n,
                    "params_stack_3x3": small,
                    "macs_kxk": big * positions,
                    "macs_stack_3x3_at_same_resolution": small * positions,
                },
                fix=f"Replace it with {n} stacked 3x3 convs (with BatchNorm+ReLU between) unless the large kernel is deliberate.",
                where=node.module,
                severity="info" if stem else "warning",
            )
        )
    return out


@_lint("redundant_bias")
def redundant_bias(graph: Graph, flops: FlopResult, inference: bool) -> list[Finding]:
    """REDUNDANT_BIAS: a conv/linear bias read only by a BatchNorm, which subtracts the mean anyway."""
    users = graph.consumers()
    by_index = graph.nodes
    hits: list[tuple[OpNode, int]] = []
    for node in graph.nodes:
        if node.packet == "aten.convolution" and node.arg(2, "bias") is not None:
            channels = int(
                node.arg(1, "weight").shape[0]
                if not node.arg(6, "transposed", False)
                else node.arg(1, "weight").shape[1] * int(node.arg(8, "groups", 1))
            )
        elif node.packet == "aten.addmm":
            channels = int(node.outputs[0].shape[-1])
        else:
            continue
        readers = users.get((node.index, 0), [])
        if len(readers) == 1 and by_index[readers[0]].packet in _BN_OPS:
            hits.append((node, channels))
    if not hits:
        return []
    wasted = sum(c for _, c in hits)
    return [
        make_finding(
            "REDUNDANT_BIAS",
            f"{len(hits)} conv/linear layer(s) add a bias that the following BatchNorm removes again "
            f"({wasted:,} parameters that cannot learn anything).",
            evidence={"count": len(hits), "modules": [n.module for n, _ in hits][:20], "wasted_params": wasted},
            fix="Construct those layers with bias=False; BatchNorm's own shift (beta) does the job.",
            where=hits[0][0].module,
        )
    ]


@_lint("uncounted_ops")
def uncounted_ops(graph: Graph, flops: FlopResult, inference: bool) -> list[Finding]:
    """UNCOUNTED_OPS: ops with no FLOP rule, listed with counts and modules, never counted as 0."""
    if not flops.uncounted:
        return []
    listed = ", ".join(f"{op} x{n}" for op, n in sorted(flops.uncounted.items()))
    return [
        make_finding(
            "UNCOUNTED_OPS",
            f"{sum(flops.uncounted.values())} op call(s) have no cost rule and are not in the totals: {listed}.",
            evidence={"ops": dict(flops.uncounted), "modules": {k: v[:10] for k, v in flops.uncounted_modules.items()}},
            fix="Totals are a lower bound. Pass extra_rules={aten.op: rule} to convdoctor.inspect, or report the op.",
            where=next(iter(flops.uncounted_modules.values()))[0] or None,
        )
    ]


@_lint("capture_fallback")
def capture_fallback(graph: Graph, flops: FlopResult, inference: bool) -> list[Finding]:
    """CAPTURE_FALLBACK: the model could not run on meta tensors and ran for real once."""
    if graph.fallback_reason is None:
        return []
    return [
        make_finding(
            "CAPTURE_FALLBACK",
            f"The model ran one real CPU forward instead of a meta one: {graph.fallback_reason}. "
            "Figures are exact for this input; cost grew with the input size.",
            evidence={"reason": graph.fallback_reason},
            fix="Nothing to fix for correctness; data-dependent Python control flow is the usual cause.",
        )
    ]


@_lint("data_dependent_cost")
def data_dependent_cost(graph: Graph, flops: FlopResult, inference: bool) -> list[Finding]:
    """DATA_DEPENDENT_COST: MACs spent on tensors sized by values (proposals, detections)."""
    found = data_dependence(graph, flops)
    if not found.macs:
        return []
    share = found.macs / flops.macs if flops.macs else 0.0
    counts = ", ".join(f"'{path}' on {n}" for path, n in found.assumed.items()) or "see evidence"
    return [
        make_finding(
            "DATA_DEPENDENT_COST",
            f"{found.macs:,} MACs ({share:.1%}) run on tensors sized by this input's content ({counts}): "
            "those rows hold for this run's proposals/detections; the rest is exact for any input of this size.",
            evidence={
                "macs": found.macs,
                "share": round(share, 4),
                "assumed": dict(found.assumed),
                "sources": dict(found.sources),
            },
            fix="Nothing to fix; for a worst case, count the heads at their proposal/detection limits.",
            where=next(iter(found.assumed), None),
        )
    ]


def run_lints(graph: Graph, flops: FlopResult, *, inference: bool = True) -> list[Finding]:
    """Every registered lint, in registration order."""
    found: list[Finding] = []
    for fn in LINTS.values():
        found.extend(fn(graph, flops, inference))
    return found
