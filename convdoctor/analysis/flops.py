"""MACs and other FLOPs per op, from shapes and attributes only.

Conventions (they match torchvision's published ``_ops`` and fvcore):

* **MACs** are the multiply-accumulates of convolution, transposed convolution, linear /
  matmul / bmm / einsum (which reach dispatch as ``mm``/``addmm``/``bmm``) and attention.
  Bias adds are *not* MACs. ``flops = 2 * macs``.
* **Other FLOPs** are everything else that computes, in their own column: bias adds,
  normalisation, pooling, elementwise ops, softmax, interpolation. One FLOP per output
  element for every elementwise op, transcendental ones included (we count operations,
  not instructions); the per-op conventions are on each rule.
* An op with no rule and not in :mod:`.zero_cost` is **uncounted**: listed with its
  count and modules (``UNCOUNTED_OPS``), never counted as zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch._ops import OpOverloadPacket, ops

from ..graph import Graph, OpNode, TensorInfo
from ._registry import RuleTable
from .flop_formulas import adaptive_pool_reads, attention_macs, bmm_macs, conv_macs, mm_macs, prod
from .zero_cost import ZERO_COST

aten = ops.aten


@dataclass(frozen=True)
class OpCost:
    """Cost of one op: multiply-accumulates and other FLOPs."""

    macs: int = 0
    other_flops: int = 0


@dataclass(frozen=True)
class Uncounted:
    """An op whose cost is unknown, with the reason."""

    reason: str


FlopRule = Callable[[OpNode], OpCost]
FLOP_RULES: RuleTable[FlopRule] = RuleTable("FLOP_RULES")
flop_rule = FLOP_RULES.register


# ---- rules ---------------------------------------------------------------------------
def _t(node: OpNode, i: int) -> TensorInfo:
    return node.inputs[i]


def _out(node: OpNode) -> TensorInfo:
    return node.outputs[0]


@flop_rule(aten.convolution)
def _conv(node: OpNode) -> OpCost:
    """Convolution; the bias add is one other-FLOP per output element."""
    x, w, out = node.arg(0, "input"), node.arg(1, "weight"), _out(node)
    transposed = bool(node.arg(6, "transposed", False))
    bias = node.arg(2, "bias")
    return OpCost(conv_macs(x.shape, w.shape, out.shape, transposed), out.numel if bias is not None else 0)


@flop_rule(aten.mm)
def _mm(node: OpNode) -> OpCost:
    """Matrix product."""
    return OpCost(mm_macs(_t(node, 0).shape, _t(node, 1).shape))


@flop_rule(aten.addmm)
def _addmm(node: OpNode) -> OpCost:
    """``bias + a @ b`` (``F.linear`` with bias): the add is one other-FLOP per output element."""
    a, b = node.arg(1, "mat1"), node.arg(2, "mat2")
    return OpCost(mm_macs(a.shape, b.shape), _out(node).numel)


@flop_rule(aten.bmm)
def _bmm(node: OpNode) -> OpCost:
    """Batched matrix product."""
    return OpCost(bmm_macs(_t(node, 0).shape, _t(node, 1).shape))


@flop_rule(aten.baddbmm)
def _baddbmm(node: OpNode) -> OpCost:
    """``input + batch1 @ batch2``."""
    a, b = node.arg(1, "batch1"), node.arg(2, "batch2")
    return OpCost(bmm_macs(a.shape, b.shape), _out(node).numel)


@flop_rule(aten.mv)
def _mv(node: OpNode) -> OpCost:
    """Matrix-vector product ``[n, m] @ [m]``."""
    a = _t(node, 0).shape
    return OpCost(int(a[0]) * int(a[1]))


@flop_rule(aten.dot, aten.vdot)
def _dot(node: OpNode) -> OpCost:
    """Dot product of two length-n vectors."""
    return OpCost(_t(node, 0).numel)


#: other-FLOPs per attention score: scale, running max, exp, sum, divide.
SOFTMAX_FLOPS_PER_ELEMENT = 5


@flop_rule(
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_flash_attention,
    aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_cudnn_attention,
    aten._scaled_dot_product_fused_attention_overrideable,
)
def _sdpa(node: OpNode) -> OpCost:
    """Fused attention kernels; softmax over the ``L x S`` scores is other-FLOPs."""
    q, k, v = (node.arg(i, n) for i, n in enumerate(("query", "key", "value")))
    scores = prod(q.shape[:-1]) * int(k.shape[-2])
    return OpCost(attention_macs(q.shape, k.shape, v.shape), SOFTMAX_FLOPS_PER_ELEMENT * scores)


def _per_output(flops_per_element: int) -> FlopRule:
    def rule(node: OpNode) -> OpCost:
        return OpCost(0, flops_per_element * _out(node).numel)

    rule.__doc__ = f"{flops_per_element} FLOP(s) per output element."
    return rule


def _per_input(flops_per_element: int) -> FlopRule:
    def rule(node: OpNode) -> OpCost:
        return OpCost(0, flops_per_element * _t(node, 0).numel)

    rule.__doc__ = f"{flops_per_element} FLOP(s) per input element."
    return rule


_ELEMENTWISE = (
    aten.add,
    aten.add_,
    aten.sub,
    aten.sub_,
    aten.rsub,
    aten.mul,
    aten.mul_,
    aten.div,
    aten.div_,
    aten.neg,
    aten.abs,
    aten.maximum,
    aten.minimum,
    aten.pow,
    aten.sqrt,
    aten.rsqrt,
    aten.reciprocal,
    aten.exp,
    aten.log,
    aten.relu,
    aten.relu_,
    aten.clamp,
    aten.clamp_,
    aten.clamp_min,
    aten.clamp_min_,
    aten.clamp_max,
    aten.clamp_max_,
    aten.hardtanh,
    aten.hardtanh_,
    aten.sigmoid,
    aten.sigmoid_,
    aten.tanh,
    aten.tanh_,
    aten.gelu,
    aten.gelu_,
    aten.silu,
    aten.silu_,
    aten.hardswish,
    aten.hardswish_,
    aten.hardsigmoid,
    aten.hardsigmoid_,
    aten.leaky_relu,
    aten.leaky_relu_,
    aten.elu,
    aten.elu_,
    aten.mish,
    aten.mish_,
    aten.softplus,
    aten.erf,
    aten.where,
    aten.masked_fill,
    aten.masked_fill_,
    aten.eq,
    aten.ne,
    aten.lt,
    aten.le,
    aten.gt,
    aten.ge,
    aten.logical_not,
    aten.logical_and,
    aten.bitwise_and,
    aten.bitwise_or,
    aten.sign,
    aten.floor,
    aten.ceil,
    aten.round,
    aten.addcmul,
    aten.lerp,
    aten.prelu,
    aten._prelu_kernel,
    aten.threshold,
    aten.log_sigmoid_forward,
)
for _p in _ELEMENTWISE:
    FLOP_RULES.add(_p, _per_output(1))

#: BatchNorm at inference folds into one scale and one shift per element.
BN_EVAL_FLOPS_PER_ELEMENT = 2
#: Normalisation with statistics: mean (1), variance (2), scale and shift (2) per element.
NORM_STATS_FLOPS_PER_ELEMENT = 5


@flop_rule(aten.native_batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_no_training)
def _batch_norm(node: OpNode) -> OpCost:
    """BatchNorm: 2 per element at inference, 5 when it computes batch statistics."""
    training = node.arg(5, "training", False) if node.packet != "aten._native_batch_norm_legit_no_training" else False
    per = NORM_STATS_FLOPS_PER_ELEMENT if training else BN_EVAL_FLOPS_PER_ELEMENT
    return OpCost(0, per * _t(node, 0).numel)


for _p in (aten.native_layer_norm, aten.native_group_norm, aten._fused_rms_norm):
    FLOP_RULES.add(_p, _per_input(NORM_STATS_FLOPS_PER_ELEMENT))
for _p in (aten._softmax, aten._safe_softmax, aten._log_softmax):
    FLOP_RULES.add(_p, _per_input(SOFTMAX_FLOPS_PER_ELEMENT))
for _p in (
    aten.mean,
    aten.sum,
    aten.amax,
    aten.amin,
    aten.max,
    aten.min,
    aten.cumsum,
    aten.prod,
    aten.var,
    aten.std,
    aten.var_mean,
    aten.argmax,
    aten.argmin,
    aten.logsumexp,
):
    FLOP_RULES.add(_p, _per_input(1))
FLOP_RULES.add(aten.linalg_vector_norm, _per_input(2))  # square and accumulate
FLOP_RULES.add(aten.native_dropout, _per_input(2))  # compare against a random draw, scale


@flop_rule(
    aten.max_pool1d,
    aten.max_pool2d,
    aten.max_pool3d,
    aten.max_pool2d_with_indices,
    aten.max_pool3d_with_indices,
    aten.avg_pool1d,
    aten.avg_pool2d,
    aten.avg_pool3d,
    aten.max_pool1d_with_indices,
)
def _pool(node: OpNode) -> OpCost:
    """Windowed pooling: one compare (max) or add (avg) per window element per output."""
    k = node.arg(1, "kernel_size")
    k = list(k) if isinstance(k, (list, tuple)) else [k]
    dims = len(_out(node).shape) - 2
    if len(k) == 1:
        k = k * max(dims, 1)
    return OpCost(0, _out(node).numel * prod(k))


@flop_rule(
    aten._adaptive_avg_pool2d,
    aten._adaptive_avg_pool3d,
    aten.adaptive_max_pool2d,
    aten.adaptive_max_pool3d,
    aten.adaptive_max_pool1d,
)
def _adaptive_pool(node: OpNode) -> OpCost:
    """Adaptive pooling: every element of every (possibly overlapping) window once."""
    x, out = _t(node, 0), _out(node)
    dims = len(out.shape) - 2
    channels = prod(x.shape[:-dims])
    return OpCost(0, channels * adaptive_pool_reads(x.shape[-dims:], out.shape[-dims:]))


#: linear interpolation: 2 multiplies + 1 add per axis pair; bilinear = 4 mul + 3 add.
INTERP_FLOPS = {
    "aten.upsample_linear1d": 3,
    "aten.upsample_bilinear2d": 7,
    "aten._upsample_bilinear2d_aa": 7,
    "aten.upsample_trilinear3d": 15,
    "aten.upsample_bicubic2d": 31,
    "aten._upsample_bicubic2d_aa": 31,
}


def _interp(node: OpNode) -> OpCost:
    """Interpolation: a weighted sum of the 2/4/8/16 neighbours of each output element."""
    return OpCost(0, INTERP_FLOPS[node.packet] * _out(node).numel)


for _name in INTERP_FLOPS:
    FLOP_RULES.add(getattr(aten, _name.split(".", 1)[1]), _interp)


# ---- the analysis --------------------------------------------------------------------
@dataclass(frozen=True)
class FlopResult:
    """Per-op costs and totals.

    Attributes:
        costs: one entry per graph node: ``OpCost``, ``Uncounted`` or None (known-zero).
        macs: total MACs.
        other_flops: total other FLOPs.
        uncounted: op name -> count of uncounted calls.
        uncounted_modules: op name -> module paths where it ran.
    """

    costs: tuple[OpCost | Uncounted | None, ...]
    macs: int
    other_flops: int
    uncounted: dict[str, int] = field(default_factory=dict)
    uncounted_modules: dict[str, list[str]] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        """``2 * macs`` (a MAC is a multiply and an add)."""
        return 2 * self.macs


def count_flops(graph: Graph, extra_rules: dict[OpOverloadPacket, FlopRule] | None = None) -> FlopResult:
    """Cost every op of the graph.

    Args:
        graph: the captured graph.
        extra_rules: user rules ``{aten.op: rule(node) -> OpCost}``; they win over ours.

    Returns:
        The per-op costs and totals.
    """
    rules = FLOP_RULES.merged(extra_rules)
    costs: list[OpCost | Uncounted | None] = []
    macs = other = 0
    uncounted: dict[str, int] = {}
    where: dict[str, list[str]] = {}
    for node in graph.nodes:
        rule = rules.get(node.packet)
        if rule is not None:
            try:
                cost: OpCost | Uncounted | None = rule(node)
            except (IndexError, TypeError, AttributeError, KeyError, ValueError) as exc:
                cost = Uncounted(f"rule failed: {type(exc).__name__}: {exc}")
        elif node.packet in ZERO_COST:
            cost = None
        else:
            cost = Uncounted("no FLOP rule for this op")
        if isinstance(cost, OpCost):
            macs += cost.macs
            other += cost.other_flops
        elif isinstance(cost, Uncounted):
            uncounted[node.packet] = uncounted.get(node.packet, 0) + 1
            mods = where.setdefault(node.packet, [])
            if node.module not in mods:
                mods.append(node.module)
        costs.append(cost)
    return FlopResult(tuple(costs), macs, other, uncounted, where)
