"""Conv-BN folding parity: the folded model (``convdoctor.fix.fuse_conv_bn``) matches the original.

Folding is exact in real arithmetic; in float32 the scaled weights round differently: at
most 2.4e-6 of the output's scale over the 58 torchvision classifiers with Conv-BN pairs
(random init, eval mode). A layer with a tiny running
variance makes the scale ``gamma / sqrt(var + eps)`` huge and the folded weights lose
precision; ``FUSION_RTOL`` flags that and nothing else.
"""

from __future__ import annotations

from ..findings import Finding, make_finding
from ..fix.fusion import find_conv_bn_pairs, fuse_conv_bn, unfoldable_batchnorms
from ._tensors import diff, leaves
from .context import BN_TYPES, CheckContext
from .registry import register_check

#: Samples compared.
FUSION_BATCH = 4
#: BatchNorm layers left unfolded that the evidence lists, with the reason.
MAX_LISTED = 10
#: Largest tolerated difference after folding, as a fraction of the output's scale.
FUSION_RTOL = 1e-3


@register_check(
    "fusion",
    summary="folding BatchNorm into the preceding convolutions leaves the outputs unchanged",
    codes=("FUSION_MISMATCH",),
    order=60,
)
def check_fusion(ctx: CheckContext) -> list[Finding]:
    """Fold every provable Conv-BN pair of the eval-mode model and compare outputs."""
    model = ctx.eval_model()
    x = ctx.take(min(FUSION_BATCH, ctx.n))
    pairs = find_conv_bn_pairs(model, graph=ctx.structure(x, model))
    total_bn = sum(isinstance(m, BN_TYPES) for m in model.modules())
    skipped = unfoldable_batchnorms(model)
    ctx.evidence.update(pairs=len(pairs), batchnorm_total=total_bn)
    if skipped:
        ctx.evidence["not_folded"] = dict(list(skipped.items())[:MAX_LISTED])
    if not pairs:
        ctx.skip("no Conv-BatchNorm pair to fold" if total_bn else "no BatchNorm layer")
    fused = fuse_conv_bn(model, pairs=pairs)
    d = diff(leaves(ctx.forward(x, fused)), leaves(ctx.forward(x, model)))
    ctx.evidence.update(samples=int(x.shape[0]), rtol=FUSION_RTOL, **d.as_dict())
    if not d.exceeds(FUSION_RTOL):
        return []
    return [
        make_finding(
            "FUSION_MISMATCH",
            f"Folding {len(pairs)} Conv-BN pair(s) changes the output by up to {d.max_abs:.3g} "
            f"({d.max_rel:.2g} of its scale, tolerance {FUSION_RTOL:g}).",
            evidence={"pairs": len(pairs), "rtol": FUSION_RTOL, **d.as_dict()},
            fix="Serve the unfused model, or look for BatchNorm layers with near-zero running_var (bn_stats) "
            "whose folded weights lose float32 precision.",
        )
    ]
