"""Determinism: the same input, run twice in the model's current mode, gives the same output.

Between the two runs the model sees a different batch, so state carried from one call to
the next (a cache, a counter used in ``forward``) shows up too. The mode is the model's
own: active dropout is a cause this check reports, with the ``modes`` check naming it.

Tolerance: on CPU two runs of the same kernels on the same input are bitwise equal; on
CUDA some kernels (atomics in scatter/index_add, cuDNN autotuning) differ in the last
bits, around 1e-7 of the output's scale. ``DETERMINISM_RTOL`` allows that and nothing
a random mask or carried state would produce.
"""

from __future__ import annotations

from ..findings import Finding, make_finding
from ._localize import first_divergence
from ._tensors import diff, leaves
from .context import DROPOUT_TYPES, CheckContext, buffers_restored, label
from .registry import register_check

#: Samples in the repeated batch.
DETERMINISM_BATCH = 8
#: Largest tolerated difference between two runs, as a fraction of the output's scale.
DETERMINISM_RTOL = 1e-5


def _fix(ctx: CheckContext) -> str:
    if any(isinstance(m, DROPOUT_TYPES) and m.training and m.p > 0 for m in ctx.model.modules()):
        return (
            "Dropout is active: call model.eval() before inference, or serve "
            "convdoctor.fix.prepare_for_inference(model)."
        )
    return (
        "Something in forward draws random numbers or keeps state between calls at inference "
        "(F.dropout(x, training=True), torch.rand, a cache): gate randomness on self.training and keep "
        "forward free of state; on GPU also call torch.use_deterministic_algorithms(True)."
    )


@register_check(
    "determinism",
    summary="the same input twice gives the same output",
    codes=("NONDETERMINISTIC_OUTPUT",),
    order=30,
)
def check_determinism(ctx: CheckContext) -> list[Finding]:
    """Run one batch, another batch, the first batch again; compare the two results."""
    n = min(DETERMINISM_BATCH, max(ctx.n, 2))
    x = ctx.take(n)
    with buffers_restored(ctx.model):
        first = leaves(ctx.forward(x))
        ctx.forward(ctx.take(n, offset=n) if ctx.n > n else -x)
        second = leaves(ctx.forward(x))
    d = diff(second, first)
    ctx.evidence.update(samples=n, rtol=DETERMINISM_RTOL, **d.as_dict())
    if not d.exceeds(DETERMINISM_RTOL):
        return []
    with buffers_restored(ctx.model):
        where = first_divergence(
            ctx.model, lambda: ctx.forward(x), lambda: ctx.forward(x), batches=(n, n), rows=None, rtol=DETERMINISM_RTOL
        )
    born = f"; the difference first appears in {label(ctx.model, where)}" if where is not None else ""
    return [
        make_finding(
            "NONDETERMINISTIC_OUTPUT",
            f"The same {n} inputs give outputs up to {d.max_abs:.3g} apart ({d.max_rel:.2g} of their scale, "
            f"tolerance {DETERMINISM_RTOL:g}) on two runs{born}.",
            evidence={"samples": n, "rtol": DETERMINISM_RTOL, **d.as_dict()},
            fix=_fix(ctx),
            where=where,
        )
    ]
