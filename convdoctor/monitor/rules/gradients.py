"""Rules on gradient norms, dead units and optimizer updates.

"Relative gradient" below is ``||grad|| / ||weight||`` of one conv or linear weight: the
size of an SGD step relative to the weight per unit of learning rate, comparable across
layers of different widths.
"""

from __future__ import annotations

import math

import numpy as np

from ...findings import Finding, make_finding
from ...fix.optim import TARGET_UPDATE_RATIO, suggest_clip_norm, suggest_lr
from ..window import Window
from ._registry import finite, fmt, rule

#: DEAD_RELU: a unit is dead when its weight gradient has been exactly zero this many steps...
DEAD_STEPS = 100
#: ...and a layer is reported when at least this share of its units are dead.
DEAD_FRACTION = 0.25

#: VANISHING_GRADIENT / EXPLODING_GRADIENT across depth use the median over this many samples...
DEPTH_SAMPLES = 20
#: ...of the first layer's relative gradient over the last layer's: vanishing below this...
VANISH_DEPTH_RATIO = 1e-3
#: ...exploding above this.
EXPLODE_DEPTH_RATIO = 1e3
#: VANISHING_GRADIENT over time: the total gradient norm fell below this fraction of its
#: initial value while the loss stayed above ``VANISH_LOSS_KEPT`` of its initial value.
VANISH_TIME_RATIO = 1e-3
VANISH_LOSS_KEPT = 0.5
#: EXPLODING_GRADIENT over time: the largest total norm of the last ``EXPLODE_SAMPLES``
#: samples is this multiple of the initial norm (the median of the first samples).
EXPLODE_FACTOR = 100.0
EXPLODE_SAMPLES = 5

#: NO_GRADIENT: a trainable parameter had ``grad is None`` at this many sampled steps running.
NO_GRAD_SAMPLES = 10

#: LR_MISMATCH needs this many update measurements (one per ``UPDATE_EVERY`` samples)...
LR_SAMPLES = 3
#: ...and fires when a group's median update/weight ratio is above this (weights change by
#: 10% per step: two orders of magnitude above the 1e-3 rule of thumb)...
LR_RATIO_HIGH = 0.1
#: ...or below this while its learning rate is still at least half its peak (so a schedule
#: annealing to zero does not fire)...
LR_RATIO_LOW = 1e-6
#: ...or when two groups' ratios differ by more than this factor.
LR_GROUP_SPREAD = 300.0


def _layers(window: Window) -> list[str]:
    return [n.rpartition(".")[0] or n for n in window.param_names]


@rule("DEAD_RELU")
def dead_relu(window: Window) -> Finding | None:
    """Layers where ``DEAD_FRACTION`` of the units had zero weight gradient for ``DEAD_STEPS`` steps.

    Only layers whose nonlinearity can die are judged (ReLU, ReLU6/hardtanh, threshold, hard
    swish/sigmoid): behind LeakyReLU, PReLU, ELU, GELU, SiLU or Mish the gradient is non-zero
    almost everywhere, so a unit there cannot be dead in this sense.
    """
    hits = []
    for u in window.units:
        if u.idle.size == 0 or not u.can_die:
            continue
        dead = int((u.idle >= DEAD_STEPS).sum())
        if dead and dead >= DEAD_FRACTION * u.idle.size:
            hits.append((u, dead, int(u.idle.size), int(np.min(u.idle[u.idle >= DEAD_STEPS]))))
    if not hits:
        return None
    worst, dead, units, steps = max(hits, key=lambda h: h[1] / h[2])
    act = worst.activation or "relu"
    label = f"{worst.name} ({worst.kind}, then {act})" if worst.kind else worst.name
    more = f" ({len(hits) - 1} more layers affected)" if len(hits) > 1 else ""
    return make_finding(
        "DEAD_RELU",
        f"{dead} of {units} units in {label} had zero gradient for the last {steps} steps{more}.",
        evidence={
            "layer": worst.name,
            "dead": dead,
            "units": units,
            "steps": steps,
            "activation": act,
            "layers": [{"name": h[0].name, "dead": h[1], "units": h[2], "activation": h[0].activation} for h in hits],
        },
        fix=f"lower the learning rate, swap {act} for LeakyReLU"
        f"{' (convdoctor.fix.leaky_relu(model))' if act == 'relu' else ''}, "
        "re-initialise with Kaiming (convdoctor.fix.reinit(model)) or put BatchNorm before the activation",
        where=worst.name,
    )


def _depth_ratio(window: Window) -> tuple[float, str, str] | None:
    """Median over recent samples of (first weight's relative gradient / last weight's)."""
    w = np.flatnonzero(window.param_is_weight) if window.param_is_weight.size else np.zeros(0, dtype=int)
    if w.size < 2 or window.grad_norms.shape[0] < DEPTH_SAMPLES:
        return None
    g = window.grad_norms[-DEPTH_SAMPLES:, w]
    wn = window.weight_norms[-DEPTH_SAMPLES:, w]
    present = window.grad_present[-DEPTH_SAMPLES:, w].all(axis=0)
    cols = np.flatnonzero(present & (wn > 0).all(axis=0))
    if cols.size < 2:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = g[:, cols] / wn[:, cols]
        ratio = float(np.median(rel[:, 0] / rel[:, -1]))
    layers = _layers(window)
    return ratio, layers[w[cols[0]]], layers[w[cols[-1]]]


@rule("VANISHING_GRADIENT")
def vanishing_gradient(window: Window) -> Finding | None:
    """First layer's relative gradient ``VANISH_DEPTH_RATIO`` x the last's, or the norm collapsed over time."""
    depth = _depth_ratio(window)
    if depth is not None and math.isfinite(depth[0]) and depth[0] < VANISH_DEPTH_RATIO:
        ratio, first, last = depth
        return make_finding(
            "VANISHING_GRADIENT",
            f"The first layer ({first}) gets a relative gradient {fmt(ratio)} times that of the last ({last}), "
            f"median of {DEPTH_SAMPLES} samples: it barely learns.",
            evidence={"depth_ratio": ratio, "first_layer": first, "last_layer": last, "samples": DEPTH_SAMPLES},
            fix="add residual connections or BatchNorm, use ReLU rather than sigmoid/tanh, and initialise with "
            "Kaiming (convdoctor.fix.reinit(model, 'kaiming'))",
            where=first,
        )
    total = finite(window.total_grad_norms()[-DEPTH_SAMPLES:])
    init, loss = window.grad_norm_initial, finite(window.last_losses(DEPTH_SAMPLES))
    if total.size < DEPTH_SAMPLES // 2 or not math.isfinite(init) or init <= 0 or loss.size == 0:
        return None
    now, loss_now = float(np.median(total)), float(np.median(loss))
    if now >= VANISH_TIME_RATIO * init or not loss_now > VANISH_LOSS_KEPT * window.loss_initial:
        return None
    return make_finding(
        "VANISHING_GRADIENT",
        f"The total gradient norm fell to {fmt(now)} from {fmt(init)} at the start ({fmt(now / init)}x) while "
        f"the loss is still {fmt(loss_now)} (started at {fmt(window.loss_initial)}).",
        evidence={"grad_norm": now, "grad_norm_initial": init, "loss": loss_now, "loss_initial": window.loss_initial},
        fix="saturated units stop the gradient: use ReLU/LeakyReLU instead of sigmoid/tanh, add BatchNorm, and "
        "re-initialise (convdoctor.fix.reinit(model, 'kaiming'))",
    )


@rule("EXPLODING_GRADIENT")
def exploding_gradient(window: Window) -> Finding | None:
    """Total norm ``EXPLODE_FACTOR`` x its initial value, or the depth ratio above ``EXPLODE_DEPTH_RATIO``."""
    total = window.total_grad_norms()
    init = window.grad_norm_initial
    recent = finite(total[-EXPLODE_SAMPLES:])
    healthy = finite(total[:-EXPLODE_SAMPLES]) if total.size > EXPLODE_SAMPLES else finite(total)
    clip = suggest_clip_norm(healthy[healthy <= EXPLODE_FACTOR * init] if math.isfinite(init) else healthy)
    if recent.size and math.isfinite(init) and init > 0 and recent.max() >= EXPLODE_FACTOR * init:
        peak = float(recent.max())
        return make_finding(
            "EXPLODING_GRADIENT",
            f"The total gradient norm reached {fmt(peak)}, {fmt(peak / init)}x its initial {fmt(init)}.",
            evidence={"grad_norm": peak, "grad_norm_initial": init, "ratio": peak / init, "suggested_clip_norm": clip},
            fix=f"clip gradients: torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={fmt(clip)}) before "
            "optimizer.step(), and lower the learning rate",
        )
    depth = _depth_ratio(window)
    if depth is None or not math.isfinite(depth[0]) or depth[0] <= EXPLODE_DEPTH_RATIO:
        return None
    ratio, first, last = depth
    return make_finding(
        "EXPLODING_GRADIENT",
        f"The first layer ({first}) gets a relative gradient {fmt(ratio)} times that of the last ({last}).",
        evidence={"depth_ratio": ratio, "first_layer": first, "last_layer": last, "suggested_clip_norm": clip},
        fix=f"clip gradients (max_norm={fmt(clip)}), add normalisation, and re-initialise with a smaller gain "
        "(convdoctor.fix.reinit(model, 'xavier'))",
        where=first,
    )


@rule("NO_GRADIENT")
def no_gradient(window: Window) -> Finding | None:
    """Trainable parameters whose ``grad`` stayed None for ``NO_GRAD_SAMPLES`` sampled steps."""
    idx = np.flatnonzero(window.no_grad >= NO_GRAD_SAMPLES)
    if idx.size == 0:
        return None
    names = [window.param_names[i] for i in idx]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return make_finding(
        "NO_GRADIENT",
        f"{len(names)} trainable parameters received no gradient for {int(window.no_grad[idx].min())} sampled "
        f"steps: {shown}.",
        evidence={"parameters": names, "count": len(names), "samples": int(window.no_grad[idx].min())},
        fix="they are not on the path to the loss (a .detach(), torch.no_grad(), an unused layer or branch): "
        "connect them, or set requires_grad=False / remove them if that is intended",
        where=names[0].rpartition(".")[0] or names[0],
    )


@rule("LR_MISMATCH")
def lr_mismatch(window: Window) -> Finding | None:
    """A group's update/weight ratio outside [``LR_RATIO_LOW``, ``LR_RATIO_HIGH``] or groups ``LR_GROUP_SPREAD`` apart."""
    if window.update_ratio.shape[0] < LR_SAMPLES or not window.group_names:
        return None
    ratio = np.median(window.update_ratio[-LR_SAMPLES:], axis=0)
    lr = window.group_lr[-1]
    live = [i for i in range(len(window.group_names)) if lr[i] > 0 and math.isfinite(ratio[i]) and ratio[i] > 0]
    if not live:
        return None
    peak = window.group_lr_max if window.group_lr_max.size == len(lr) else lr
    bad = [i for i in live if ratio[i] > LR_RATIO_HIGH or (ratio[i] < LR_RATIO_LOW and lr[i] >= 0.5 * peak[i])]
    hi, lo = max(live, key=lambda i: ratio[i]), min(live, key=lambda i: ratio[i])
    spread = float(ratio[hi] / ratio[lo])
    if not bad and spread <= LR_GROUP_SPREAD:
        return None
    # the group to fix: one out of bounds, else the one farthest (in decades) from the healthy ratio
    i = bad[0] if bad else max(live, key=lambda j: abs(math.log10(ratio[j] / TARGET_UPDATE_RATIO)))
    name = window.group_names[i]
    groups = ", ".join(f"{window.group_names[j]} {fmt(float(ratio[j]))} at lr {fmt(float(lr[j]))}" for j in live)
    new = suggest_lr(float(lr[i]), update_ratio=float(ratio[i]))
    return make_finding(
        "LR_MISMATCH",
        f"Parameter group {name!r} changes its weights by {fmt(float(ratio[i]))} of their norm per step "
        f"(healthy is about {fmt(TARGET_UPDATE_RATIO)}); update/weight by group: {groups}.",
        evidence={
            "group": name,
            "update_ratio": float(ratio[i]),
            "lr": float(lr[i]),
            "suggested_lr": new,
            "groups": {window.group_names[j]: {"update_ratio": float(ratio[j]), "lr": float(lr[j])} for j in live},
            "spread": spread,
        },
        fix=f"set group {name!r}'s learning rate to about {fmt(new)} (convdoctor.fix.param_groups(model, head, lr, "
        "head_lr_mult=10) gives a new head larger steps than a pretrained backbone)",
        where=name,
    )
