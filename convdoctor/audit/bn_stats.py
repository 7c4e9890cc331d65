"""BatchNorm running statistics: never updated, invalid, or too large to serve.

A static check of the buffers eval mode will use (no forward pass):

* invalid: NaN or Inf in ``running_mean``/``running_var``, or a negative variance.
* never updated: ``running_mean`` all 0 and ``running_var`` all 1, the values
  ``reset_running_stats`` leaves, in a layer that has been trained. Eval mode then
  normalises with mean 0 and variance 1 whatever the activations are. The evidence of
  training is graded, and only certainty is an ``error``:

  - ``num_batches_tracked`` > 0: the layer counted training batches, and no real batch
    leaves the statistics at exactly 0 and 1, so they were reset or replaced afterwards
    (certain: ``error``);
  - otherwise the evidence is the rest of the model: when other layers' statistics were
    updated, the model was trained and these layers were not, or lost their buffers
    (``warning``); when no layer's were, a fresh model and one whose every buffer was
    lost look the same (``info``: the model looks untrained).

  Affine parameters are no proof either way: initialisers set constants (1 and 0, the
  zero-init of a residual block's last BatchNorm) but also random values (timm's RepVGG
  draws gamma from N(0.1, 0.1)); the count of per-channel affine values is evidence only.
  The user's sample is proof: when recomputing the statistics on it (on a copy) makes the
  predictions right where they were wrong, or confident where they were not
  (:mod:`.bn_recalibration`), the weights are trained and the statistics wrong: an ``error``,
  whatever the buffers alone would say (the ``strict=False`` checkpoint that dropped them).
* untrained: every layer at its initial statistics with no batch counted (an ``info``,
  not an error: nothing was lost in a hand-off that the buffers can show); when only
  some are, those layers never saw a batch (a ``warning``).
* extreme: a statistic beyond float16's largest finite value (65504). The model works in
  float32 but ``model.half()`` turns that buffer into Inf and the layer's output into
  NaN or 0, a common way to serve.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._compat import NormBase
from ..findings import Finding, make_finding
from .bn_recalibration import recalibration_evidence
from .context import CheckContext
from .registry import register_check

#: float16's largest finite value: statistics beyond it overflow under ``model.half()``.
EXTREME_STAT = 65504.0
#: Layers listed in a finding's evidence.
MAX_LAYERS = 10


def _layer(name: str, m: NormBase) -> dict[str, Any]:
    """Facts about one layer's statistics and affine parameters (the caller checked they exist)."""
    assert m.running_mean is not None and m.running_var is not None
    mean = m.running_mean.detach().double().cpu()
    var = m.running_var.detach().double().cpu()
    nbt = m.num_batches_tracked
    finite = torch.isfinite(mean).all() and torch.isfinite(var).all()
    # one value per layer (any constant, not only 1 and 0): what most initialisers leave
    affine_default = not m.affine or (_constant(m.weight) and _constant(m.bias))
    return {
        "name": name,
        "num_batches_tracked": None if nbt is None else int(nbt),
        "mean_abs_max": float(mean.abs().max()) if mean.numel() else 0.0,
        "var_min": float(var.min()) if var.numel() else 1.0,
        "var_max": float(var.max()) if var.numel() else 1.0,
        "invalid": bool(not finite or (var < 0).any()),
        "default_stats": bool((mean == 0).all() and (var == 1).all()),
        "affine_default": affine_default,
    }


def _constant(t: torch.Tensor | None) -> bool:
    if t is None or t.numel() == 0:
        return True
    flat = t.detach().reshape(-1)
    return bool((flat == flat[0]).all())


def _summary(layer: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "num_batches_tracked", "mean_abs_max", "var_min", "var_max")
    return {k: layer[k] for k in keys}


def _counted(layer: dict[str, Any]) -> bool:
    """The certain evidence: the layer counted training batches."""
    return bool(layer["num_batches_tracked"])


def _invalid(layers: list[dict[str, Any]]) -> list[Finding]:
    bad = [lay for lay in layers if lay["invalid"]]
    if not bad:
        return []
    return [
        make_finding(
            "BN_STATS_INVALID",
            f"{len(bad)} BatchNorm layer(s) hold NaN, Inf or negative running statistics ({bad[0]['name']}: "
            f"var in [{bad[0]['var_min']:.3g}, {bad[0]['var_max']:.3g}], |mean| up to {bad[0]['mean_abs_max']:.3g}); "
            "every eval-mode output through them is garbage.",
            evidence={"count": len(bad), "layers": [_summary(lay) for lay in bad[:MAX_LAYERS]]},
            fix="Recompute the statistics on training data with convdoctor.fix.recalibrate_bn(model, batches), "
            "and look for the NaN/Inf in training (a diverged step, fp16 overflow).",
            where=bad[0]["name"],
        )
    ]


def _proven(rest: list[dict[str, Any]], total: int, sample: dict[str, Any], fix: str) -> Finding:
    """The error the sample proves: the numbers before and after recalibrating on it."""
    r = sample["recalibration"]
    if "accuracy_before" in r:
        what = (
            f"accuracy {r['accuracy_before']:.1%} as loaded, {r['accuracy_after']:.1%} with statistics recomputed "
            f"on the sample ({r['wrong_to_right']} samples fixed, {r['right_to_wrong']} broken, p = {r['p_value']:.2g})"
        )
    else:
        what = (
            f"{1 - r['agreement']:.0%} of the predictions change when the statistics are recomputed on the sample, "
            f"and the recomputed model is confident ({r['confidence_after']:.2f} on a 0-1 scale from chance, "
            f"{r['confidence_before']:.2f} as loaded)"
        )
    worst = max(sample["layers"], key=lambda lay: lay["var_log_ratio"], default=None)
    seen = (
        f"; the inputs reaching {worst['name']} have mean up to {worst['sample_mean_abs_max']:.3g} and median "
        f"variance {worst['sample_var_median']:.3g} against the loaded 0 and 1"
        if worst
        else ""
    )
    return make_finding(
        "BN_STATS_UNINITIALIZED",
        f"{len(rest)} of {total} BatchNorm layers hold the initial statistics (mean 0, var 1, no batch counted) "
        f"but the weights are trained: {what}{seen}. The buffers were not loaded (load_state_dict(strict=False) "
        "from a checkpoint without running_mean/running_var).",
        evidence={
            "count": len(rest),
            "evidence": "recalibration on the sample",
            "recalibration": r,
            "layers": sample["layers"],
        },
        fix=fix,
        where=rest[0]["name"],
    )


def _uninitialized(layers: list[dict[str, Any]], ctx: CheckContext | None = None) -> list[Finding]:
    default = [lay for lay in layers if lay["default_stats"] and not lay["invalid"]]
    certain = [lay for lay in default if _counted(lay)]
    rest = [lay for lay in default if not _counted(lay)]
    trained_elsewhere = len(layers) - len(rest)  # layers that counted batches or whose statistics moved
    fix = (
        "Recompute the running statistics with convdoctor.fix.recalibrate_bn(model, batches) on a few "
        "hundred training samples, or load the checkpoint's buffers (load_state_dict(strict=True))."
    )
    findings = []
    if certain:
        findings.append(
            make_finding(
                "BN_STATS_UNINITIALIZED",
                f"{len(certain)} BatchNorm layer(s) counted training batches (num_batches_tracked "
                f"{certain[0]['num_batches_tracked']} in {certain[0]['name']}) yet hold the initial running statistics "
                "(mean 0, var 1): they were reset or never loaded, and eval mode will normalise with the wrong statistics.",
                evidence={
                    "count": len(certain),
                    "evidence": "num_batches_tracked > 0",
                    "layers": [_summary(lay) for lay in certain[:MAX_LAYERS]],
                },
                fix=fix,
                where=certain[0]["name"],
            )
        )
    if not rest:
        return findings
    sample = recalibration_evidence(ctx, {lay["name"] for lay in rest}) if ctx is not None else None
    if sample is not None and sample["proven"]:
        return [*findings, _proven(rest, len(layers), sample, fix)]
    measured = {"recalibration": sample["recalibration"]} if sample is not None else {}
    learned = sum(not lay["affine_default"] for lay in rest)
    if trained_elsewhere == 0:
        # nothing in the model ever saw a batch: fresh init and "every buffer lost" look the same here
        note = (
            f"; {learned} have affine values that differ per channel, which trained weights and some "
            "initialisers (RepVGG's) both leave"
            if learned
            else ""
        )
        findings.append(
            make_finding(
                "BN_STATS_UNINITIALIZED",
                f"All {len(layers)} BatchNorm layers hold their initial statistics and none counted a batch{note}: the "
                "model is untrained (random init) or its buffers were not loaded, so accuracy numbers from it mean "
                "nothing.",
                evidence={"count": len(rest), "untrained_model": True, "learned_affine": learned, **measured},
                severity="info",
                fix="Load the trained weights and buffers (--weights CKPT) before auditing.",
            )
        )
        return findings
    findings.append(
        make_finding(
            "BN_STATS_UNINITIALIZED",
            f"{len(rest)} of {len(layers)} BatchNorm layers never updated their statistics while {trained_elsewhere} "
            f"others did (e.g. {rest[0]['name']}; {learned} of them with per-channel affine values, as training "
            "leaves): they were not trained or their buffers were not loaded.",
            evidence={
                "count": len(rest),
                "evidence": "other layers' statistics were updated",
                "learned_affine": learned,
                "layers": [_summary(lay) for lay in rest[:MAX_LAYERS]],
                **measured,
            },
            severity="warning",
            fix=fix,
            where=rest[0]["name"],
        )
    )
    return findings


def _extreme(layers: list[dict[str, Any]]) -> list[Finding]:
    big = [lay for lay in layers if not lay["invalid"] and max(lay["var_max"], lay["mean_abs_max"]) > EXTREME_STAT]
    if not big:
        return []
    worst = max(big, key=lambda lay: max(lay["var_max"], lay["mean_abs_max"]))
    return [
        make_finding(
            "BN_STATS_EXTREME",
            f"{len(big)} BatchNorm layer(s) have running statistics beyond float16's range ({worst['name']}: "
            f"var up to {worst['var_max']:.3g}, |mean| up to {worst['mean_abs_max']:.3g} > {EXTREME_STAT:g}): "
            "model.half() turns them into Inf.",
            evidence={"count": len(big), "limit": EXTREME_STAT, "layers": [_summary(lay) for lay in big[:MAX_LAYERS]]},
            fix="Serve in float32 or bfloat16, or normalise the inputs (the stats are large when inputs are not "
            "scaled, e.g. 0..255 pixels).",
            where=worst["name"],
        )
    ]


@register_check(
    "bn_stats",
    summary="BatchNorm running statistics are updated, finite and in range",
    codes=("BN_STATS_UNINITIALIZED", "BN_STATS_INVALID", "BN_STATS_EXTREME"),
    order=40,
)
def check_bn_stats(ctx: CheckContext) -> list[Finding]:
    """Read every tracked normalisation layer's running statistics."""
    layers = [
        _layer(name, m)
        for name, m in ctx.model.named_modules()
        if isinstance(m, NormBase)
        and m.track_running_stats
        and m.running_mean is not None
        and m.running_var is not None
        and not isinstance(m.running_mean, nn.parameter.UninitializedBuffer)
    ]
    ctx.evidence.update(
        layers=len(layers),
        never_updated=sum(lay["default_stats"] for lay in layers),
        invalid=sum(lay["invalid"] for lay in layers),
    )
    if not layers:
        ctx.skip("no BatchNorm layer with running statistics")
    return _invalid(layers) + _uninitialized(layers, ctx) + _extreme(layers)
