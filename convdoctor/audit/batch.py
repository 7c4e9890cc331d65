"""Batch dependence: a sample's output must not depend on the batch it is served in.

A few probe samples are run alone (the reference), inside batches of every size in
``batch_sizes``, and at the end of a batch of other samples. Each probe's output row is
compared with its reference. Dropout is held in eval mode here (the ``modes`` and
``determinism`` checks report it), and the model's run-to-run noise is measured first: when
a sample alone disagrees with itself, every module but BatchNorm is held in eval and the
noise measured again; a model still random then cannot be tested for batch effects.

Tolerance: float32 CPU kernels do not give bitwise-equal results across batch sizes
(oneDNN and MKL pick different blockings and reduction orders per shape). Over all 80
torchvision classifiers at random init in eval mode (batch sizes 1, 2 and 4, the smallest
input each accepts) the largest difference measured was 2.3e-6 of the output's scale
(vgg16); batch statistics move outputs by a sizeable fraction of it (0.1 to 1 in the tests).
``BATCH_RTOL`` sits between the two, 40 times above the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import one_line
from ..findings import Finding, make_finding
from ._localize import first_divergence
from ._tensors import diff, rows
from .context import BN_TYPES, CheckContext, buffers_restored, label
from .incident import accuracy_rows
from .registry import register_check

#: Samples whose outputs are compared (each costs one batch-1 forward).
PROBES = 4
#: Largest tolerated difference, as a fraction of the output's scale (see module docstring).
BATCH_RTOL = 1e-4


@dataclass(frozen=True)
class _Run:
    label: str
    batch: torch.Tensor
    positions: tuple[int, ...]  # row of probe i in ``batch``


def _probe_rows(ctx: CheckContext, batch: torch.Tensor, positions: tuple[int, ...]) -> list[list[torch.Tensor]]:
    out = rows(ctx.forward(batch), int(batch.shape[0]))
    return [[t[p] for t in out] for p in positions]


def _runs(ctx: CheckContext, probes: int) -> list[_Run]:
    """Batches of each size (probes first), then probes in reverse at the end of other samples."""
    runs = [_Run(f"batch {b}", ctx.take(b), tuple(range(min(b, probes)))) for b in ctx.batch_sizes if b > 1]
    size = max(max(ctx.batch_sizes), probes + 1)
    others = ctx.take(size - probes, offset=probes)
    if ctx.n <= probes:  # no other sample to mix with: use the probes' negatives
        others = -ctx.take(size - probes)
    probe_batch = ctx.take(probes)
    mixed = torch.cat([others, probe_batch.flip(0)])
    runs.append(_Run(f"mixed {size}", mixed, tuple(size - 1 - i for i in range(probes))))
    return runs


def _compare(ctx: CheckContext, refs: list[list[torch.Tensor]], run: _Run) -> dict[str, Any]:
    try:
        got = _probe_rows(ctx, run.batch, run.positions)
    except Exception as exc:  # failing at some batch size is batch dependence too
        return {"run": run.label, "batch_size": int(run.batch.shape[0]), "error": one_line(exc)}
    n = len(got)  # a batch smaller than the probe count holds only the first probes
    d = diff([t for row in got for t in row], [t for row in refs[:n] for t in row])
    return {"run": run.label, "batch_size": int(run.batch.shape[0]), **d.as_dict()}


def _failed(entry: dict[str, Any]) -> bool:
    return "error" in entry or entry["max_rel_diff"] > BATCH_RTOL


def _fix(ctx: CheckContext, where: str | None) -> str:
    if any(isinstance(m, BN_TYPES) and m.training for m in ctx.model.modules()):
        return (
            "BatchNorm in training mode normalises with batch statistics: call model.eval() before "
            "inference, or serve convdoctor.fix.prepare_for_inference(model)."
        )
    return (
        f"A module{f' ({where})' if where else ''} mixes the samples of a batch in eval mode (batch "
        "statistics, a mean or softmax over dim 0): compute per-sample statistics (running stats, "
        "GroupNorm, LayerNorm) so that each output depends only on its own input."
    )


def _finding(ctx: CheckContext, runs: list[_Run], results: list[dict[str, Any]], probes: int) -> Finding:
    bad = [(run, r) for run, r in zip(runs, results) if _failed(r)]
    run, worst = max(bad, key=lambda rr: float("inf") if "error" in rr[1] else rr[1]["max_rel_diff"])
    where = None
    if "error" not in worst:
        batch = int(run.batch.shape[0])
        where = first_divergence(
            ctx.model,
            lambda: ctx.forward(ctx.take(1)),
            lambda: ctx.forward(run.batch),
            batches=(1, batch),
            rows=(0, run.positions[0]),
            rtol=BATCH_RTOL,
        )
        what = (
            f"changes by up to {worst['max_abs_diff']:.3g} ({worst['max_rel_diff']:.2g} of its scale, "
            f"tolerance {BATCH_RTOL:g}) when run in {run.label} instead of alone"
        )
    else:
        what = f"cannot be computed in {run.label}: {worst['error']}"
    born = f"; the difference first appears in {label(ctx.model, where)}" if where is not None else ""
    return make_finding(
        "BATCH_DEPENDENT_OUTPUT",
        f"A sample's output {what}{born}.",
        evidence={"worst": worst, "runs": results, "probes": probes, "rtol": BATCH_RTOL},
        fix=_fix(ctx, where),
        where=where,
    )


def _incident(ctx: CheckContext) -> dict[str, Any] | None:
    if ctx.targets is None or ctx.scores is None:
        return None

    def run_eval(x: torch.Tensor) -> Any:
        with ctx.modes(all_eval=True):
            return ctx.forward(x)

    table = accuracy_rows(ctx.forward, run_eval, ctx.sample, ctx.targets, ctx.batch_sizes, ctx.scores)
    return {**table, "scores": ctx.scores.describe()}


#: What the batch check holds in eval mode, tried in order: dropout only (the model's own mode
#: otherwise), then, when the model is still random (stochastic depth, a custom noisy layer),
#: every module but BatchNorm. The modes and determinism checks report what is held.
_HOLDS = (("dropout", {"dropout_eval": True}), ("every module but BatchNorm", {"only_bn": True}))


def _compare_batches(ctx: CheckContext, probes: int) -> list[Finding]:
    """Probe references alone, a noise check, then the batch runs (model modes set by the caller)."""
    for held, flags in _HOLDS:
        with ctx.modes(**flags):
            try:
                refs = [_probe_rows(ctx, ctx.take(1, offset=i), (0,))[0] for i in range(probes)]
                noise = diff(_probe_rows(ctx, ctx.take(1), (0,))[0], refs[0])
            except Exception as exc:  # e.g. BatchNorm1d in training mode on one sample
                ctx.evidence["alone_error"] = one_line(exc)
                return [
                    make_finding(
                        "BATCH_DEPENDENT_OUTPUT",
                        f"The model cannot run on a single sample: {one_line(exc)}.",
                        evidence={"error": one_line(exc)},
                        fix=_fix(ctx, None),
                    )
                ]
            if noise.exceeds(BATCH_RTOL):
                continue
            ctx.evidence.update(held_in_eval=held, noise=noise.as_dict())
            runs = _runs(ctx, probes)
            results = [_compare(ctx, refs, run) for run in runs]
            ctx.evidence["runs"] = results
            return [_finding(ctx, runs, results, probes)] if any(_failed(r) for r in results) else []
    ctx.evidence["skipped_comparison"] = "the same sample alone gives different outputs on two runs"
    return []


@register_check(
    "batch",
    summary="each sample's output is the same alone, in every batch size, and mixed with other samples",
    codes=("BATCH_DEPENDENT_OUTPUT",),
    order=20,
)
def check_batch(ctx: CheckContext) -> list[Finding]:
    """Compare probe outputs alone vs inside batches; with targets, add the accuracy table."""
    probes = min(PROBES, ctx.n)
    ctx.evidence.update(probes=probes, rtol=BATCH_RTOL)
    with buffers_restored(ctx.model):
        findings = _compare_batches(ctx, probes)
    incident = _incident(ctx)
    if incident is not None:
        ctx.evidence["incident"] = incident
    if not findings and "skipped_comparison" in ctx.evidence and incident is None:
        ctx.skip(
            "nondeterministic model: batch effects cannot be told from run-to-run noise (see the determinism check)"
        )
    return findings
