"""Rules on the loss curve, the predictions and the epoch records.

Thresholds are module constants; each states what it measures and why its value.
Batch losses are noisy, so every level is a median over a block of steps, never one step.
"""

from __future__ import annotations

import math

import numpy as np

from ...findings import Finding, make_finding
from ...fix.optim import DIVERGING_LR_CUT, OSCILLATING_LR_CUT, suggest_clip_norm, suggest_lr
from ..window import Epoch, Window
from ._registry import finite, fmt, rule

#: Consecutive sampled steps with a non-finite gradient before NAN_LOSS fires on gradients
#: alone: AMP's GradScaler overflows on single steps by design and skips them.
NAN_GRAD_SAMPLES = 3

#: Steps per block whose median is "the loss now" for LOSS_DIVERGING.
DIVERGE_STEPS = 20
#: LOSS_DIVERGING: the current median is at least this multiple of the best rolling median...
DIVERGE_FACTOR = 2.0
#: ...and above it by at least this fraction of the initial loss (a converged run at loss
#: 0.02 that drifts to 0.05 has doubled but is not diverging).
DIVERGE_MIN_RISE = 0.25

#: LOSS_OSCILLATING looks at this many recent steps...
OSC_STEPS = 150
#: ...smoothed by a running mean over this many steps (averages out batch-to-batch noise)...
OSC_SMOOTH = 5
#: ...and counts swings: the smoothed loss rising this far above its last trough (relative)...
OSC_RISE = 0.5
#: ...and by at least this fraction of the initial loss in absolute terms...
OSC_MIN_ABS = 0.1
#: ...fires with this many swings in the window while the loss is not trending down.
OSC_SWINGS = 3
#: "Not trending down": the second half's median is above this fraction of the first half's.
OSC_TREND = 0.85

#: LOSS_AT_CHANCE needs this many recent steps...
CHANCE_STEPS = 100
#: ...each quarter of them with a median within this fraction of the chance loss (the
#: entropy of the label distribution, ln(num_classes) when balanced; PyTorch's default
#: initialisation starts a 10-class net 5-7% above it)...
CHANCE_TOL = 0.1
#: ...and the last quarter no lower than the first by more than this fraction of chance (a
#: slow but learning run is not stuck).
CHANCE_TREND = 0.02

#: CONSTANT_PREDICTION looks at this many recent steps...
CONST_STEPS = 50
#: ...and fires when one class takes at least this share of the predictions while the
#: targets are not that concentrated.
CONST_SHARE = 0.9
#: Targets with one class at or above this share of ``CONST_STEPS`` steps (1,600 labels at batch
#: 32) are a label bug (a wrong column, a target_transform returning 0), not a dataset: with two
#: classes or more a balanced share is at most 50%, and data 98% one class would be trained as
#: detection with a re-weighted loss, not as a plain classifier.
TARGET_DOMINANT_SHARE = 0.98

#: OVERFITTING: epochs since the best validation loss (early stopping's "patience")...
OVERFIT_PATIENCE = 3
#: ...with the median validation loss of those epochs at least this fraction above its best
#: (a 300-image validation set's loss moves 10% between epochs by noise alone)...
OVERFIT_RISE = 0.2
#: ...or the validation accuracy this far (absolute) below its best, when no val loss is given.
OVERFIT_ACC_DROP = 0.02


def _lr(window: Window) -> float | None:
    """The latest learning rate of the first group with one (None when no optimizer was passed)."""
    if window.group_lr.size == 0:
        return None
    row = window.group_lr[-1]
    row = row[np.isfinite(row) & (row > 0)]
    return float(row.max()) if row.size else None


def _lr_fix(window: Window, cut: float) -> str:
    lr = _lr(window)
    if lr is None:
        return f"divide the learning rate by {fmt(cut)}"
    return f"lower the learning rate from {fmt(lr)} to {fmt(suggest_lr(lr, cut=cut))}"


@rule("NAN_LOSS")
def nan_loss(window: Window) -> Finding | None:
    """NaN or Inf in the loss, or in the gradients for ``NAN_GRAD_SAMPLES`` sampled steps running."""
    bad = np.flatnonzero(~np.isfinite(window.loss))
    grad_bad = _bad_grad_run(window)
    if bad.size == 0 and grad_bad is None:
        return None
    clip = suggest_clip_norm(finite(window.total_grad_norms()))
    if bad.size:
        first = int(window.loss_start + bad[0])
        what = (
            f"the loss was {fmt(float(window.loss[bad[0]]))} at step {first} ({bad.size} of the last "
            f"{window.loss.size} steps non-finite)"
        )
        evidence: dict[str, object] = {
            "first_step": first,
            "nonfinite_steps": int(bad.size),
            "window_steps": int(window.loss.size),
        }
    else:
        assert grad_bad is not None
        first, name = grad_bad
        what = f"gradients were non-finite from step {first} on, first in {name}"
        evidence = {"first_step": first, "parameter": name}
    return make_finding(
        "NAN_LOSS",
        f"Training produced NaN/Inf: {what}.",
        evidence={**evidence, "suggested_clip_norm": clip},
        fix=f"{_lr_fix(window, DIVERGING_LR_CUT)}, clip gradients with torch.nn.utils.clip_grad_norm_("
        f"model.parameters(), max_norm={fmt(clip)}), and look for log(0), division by zero or NaN inputs "
        "(torch.autograd.set_detect_anomaly(True) for one step names the op)",
    )


def _bad_grad_run(window: Window) -> tuple[int, str] | None:
    if window.grad_norms.shape[0] < NAN_GRAD_SAMPLES:
        return None
    g = window.grad_norms[-NAN_GRAD_SAMPLES:]
    present = (
        window.grad_present[-NAN_GRAD_SAMPLES:]
        if window.grad_present.shape == window.grad_norms.shape
        else np.ones(g.shape, dtype=bool)
    )
    bad = ~np.isfinite(g) & present
    if not bad.any(axis=1).all():
        return None
    col = int(np.flatnonzero(bad[0])[0]) if bad[0].any() else int(np.flatnonzero(bad.any(axis=0))[0])
    name = window.param_names[col] if col < len(window.param_names) else f"parameter {col}"
    return int(window.grad_steps[-NAN_GRAD_SAMPLES]), name


@rule("LOSS_DIVERGING")
def loss_diverging(window: Window) -> Finding | None:
    """The loss median of the last ``DIVERGE_STEPS`` is ``DIVERGE_FACTOR`` x above the run's best."""
    recent = finite(window.last_losses(DIVERGE_STEPS))
    if recent.size < DIVERGE_STEPS // 2 or not math.isfinite(window.loss_best):
        return None
    now, best = float(np.median(recent)), window.loss_best
    scale = window.loss_initial if math.isfinite(window.loss_initial) else best
    if now < DIVERGE_FACTOR * best or now - best < DIVERGE_MIN_RISE * scale:
        return None
    return make_finding(
        "LOSS_DIVERGING",
        f"The loss rose to {fmt(now)} (median of the last {DIVERGE_STEPS} steps) from its best {fmt(best)} "
        f"at step {window.loss_best_step}: {fmt(now / best)}x.",
        evidence={
            "loss_now": now,
            "loss_best": best,
            "best_step": window.loss_best_step,
            "ratio": now / best,
            "initial_loss": window.loss_initial,
            "lr": _lr(window),
        },
        fix=f"{_lr_fix(window, DIVERGING_LR_CUT)} (or add warm-up), and clip gradients "
        f"(convdoctor.fix.suggest_clip_norm gives max_norm from the healthy steps)",
    )


@rule("LOSS_OSCILLATING")
def loss_oscillating(window: Window) -> Finding | None:
    """``OSC_SWINGS`` rises of the smoothed loss by ``OSC_RISE`` above its trough, with no downward trend."""
    loss = window.last_losses(OSC_STEPS)
    if loss.size < OSC_STEPS or not np.isfinite(loss).all():
        return None
    smooth = np.convolve(loss, np.ones(OSC_SMOOTH) / OSC_SMOOTH, mode="valid")
    scale = window.loss_initial if math.isfinite(window.loss_initial) else float(np.median(loss))
    swings, amplitude = _swings(smooth, OSC_RISE, OSC_MIN_ABS * scale)
    half = loss.size // 2
    first, second = float(np.median(loss[:half])), float(np.median(loss[half:]))
    if swings < OSC_SWINGS or second < OSC_TREND * first:
        return None
    return make_finding(
        "LOSS_OSCILLATING",
        f"The smoothed loss swung up by more than {int(OSC_RISE * 100)}% {swings} times in the last "
        f"{OSC_STEPS} steps (largest swing {fmt(amplitude)}) without trending down "
        f"({fmt(first)} -> {fmt(second)}).",
        evidence={
            "swings": swings,
            "largest_swing": amplitude,
            "median_first_half": first,
            "median_second_half": second,
            "steps": OSC_STEPS,
            "lr": _lr(window),
        },
        fix=f"{_lr_fix(window, OSCILLATING_LR_CUT)} or decay it (torch.optim.lr_scheduler.CosineAnnealingLR); "
        "with small batches, accumulate gradients (convdoctor.fix.GradAccumulator)",
    )


def _swings(smooth: np.ndarray, rise: float, min_abs: float) -> tuple[int, float]:
    """Count rises of at least ``rise`` (relative) and ``min_abs`` (absolute) above the running trough.

    After a counted rise the detector follows the peak and re-arms only once the curve has
    fallen back halfway to the trough, so one long climb counts once.

    Returns:
        ``(swings, largest peak-to-trough amplitude)``.
    """
    trough, peak, count, largest = float(smooth[0]), None, 0, 0.0
    for v in map(float, smooth[1:]):
        if peak is None:  # looking for a rise
            trough = min(trough, v)
            if v - trough >= max(rise * trough, min_abs):
                count, peak = count + 1, v
        else:  # inside a swing
            peak = max(peak, v)
            if v <= trough + (peak - trough) / 2:
                trough, peak = v, None
        if peak is not None:
            largest = max(largest, peak - trough)
    return count, largest


def _chance(window: Window) -> tuple[float, str] | None:
    """The loss of a model that ignores its input: the label entropy (ln C for balanced labels)."""
    c = window.num_classes
    if not c or c < 2:
        return None
    counts = window.targets[-CHANCE_STEPS:].sum(axis=0) if window.targets.size else np.zeros(0)
    if counts.sum() > 0:
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum()), "the entropy of the labels"
    return math.log(c), f"ln({c})"


@rule("LOSS_AT_CHANCE")
def loss_at_chance(window: Window) -> Finding | None:
    """Every quarter of the last ``CHANCE_STEPS`` steps has a median within ``CHANCE_TOL`` of chance."""
    chance = _chance(window)
    loss = window.last_losses(CHANCE_STEPS)
    if chance is None or loss.size < CHANCE_STEPS or not np.isfinite(loss).all():
        return None
    level, what = chance
    medians = [float(np.median(q)) for q in np.array_split(loss, 4)]
    if max(abs(m - level) for m in medians) > CHANCE_TOL * level or medians[0] - medians[-1] > CHANCE_TREND * level:
        return None
    lr = _lr(window)
    return make_finding(
        "LOSS_AT_CHANCE",
        f"The loss has stayed at {fmt(medians[-1])} for {CHANCE_STEPS} steps, within {int(CHANCE_TOL * 100)}% "
        f"of chance ({fmt(level)}, {what}): the outputs do not depend on the inputs.",
        evidence={
            "loss": medians[-1],
            "chance_loss": level,
            "num_classes": window.num_classes,
            "steps": CHANCE_STEPS,
            "lr": lr,
        },
        fix="check that the optimizer holds the model's parameters and the labels match the inputs, raise the "
        f"learning rate{f' (now {fmt(lr)})' if lr else ''}, and re-initialise "
        "(convdoctor.fix.reinit(model, 'kaiming'))",
    )


@rule("CONSTANT_PREDICTION")
def constant_prediction(window: Window) -> Finding | None:
    """One class takes ``CONST_SHARE`` of the last ``CONST_STEPS`` steps' predictions.

    The cause goes in the evidence: targets that are themselves one class (``TARGET_DOMINANT_SHARE``,
    a label bug) or a model that collapsed on labels that are not (``cause: "model"``). Data
    that is merely imbalanced (the top class between ``CONST_SHARE`` and ``TARGET_DOMINANT_SHARE``
    of the targets) is predicted as it is labelled and does not fire.
    """
    preds = window.preds[-CONST_STEPS:]
    if preds.shape[0] < CONST_STEPS or preds.shape[1] < 2 or preds.sum() == 0:
        return None
    total = preds.sum(axis=0)
    top = int(np.argmax(total))
    share = float(total[top] / total.sum())
    targets = window.targets[-CONST_STEPS:].sum(axis=0) if window.targets.size else np.zeros(0)
    target_share = float(targets.max() / targets.sum()) if targets.size and targets.sum() else None
    labels_bug = target_share is not None and target_share >= TARGET_DOMINANT_SHARE
    if share < CONST_SHARE or (target_share is not None and target_share >= CONST_SHARE and not labels_bug):
        return None
    of_targets = (
        f"; class {top} is {fmt(100 * float(targets[top] / targets.sum()))}% of the targets"
        if target_share is not None
        else ""
    )
    evidence = {
        "class": top,
        "share": share,
        "predictions": int(total.sum()),
        "steps": CONST_STEPS,
        "target_share_max": target_share,
        "cause": "model",
    }
    fix = (
        "check the labels are aligned with the inputs and the classes balanced (CrossEntropyLoss(weight=...) "
        "or a WeightedRandomSampler), and look for dead units or a learning rate that is too high"
    )
    if labels_bug and target_share is not None:
        label = int(np.argmax(targets))
        evidence = {**evidence, "cause": "degenerate_targets", "target_class": label}
        of_targets = f": the targets themselves are {fmt(100 * float(target_share))}% class {label} (a label bug)"
        fix = (
            f"fix the data, not the model: {int(targets.sum())} targets in {CONST_STEPS} steps are "
            f"{fmt(100 * float(target_share))}% class {label}: check the label column, a target_transform "
            "that returns a constant, or a sampler that draws one class"
        )
    return make_finding(
        "CONSTANT_PREDICTION",
        f"The model predicted class {top} for {fmt(100 * share)}% of {int(total.sum())} inputs over the last "
        f"{CONST_STEPS} steps{of_targets}.",
        evidence=evidence,
        fix=fix,
    )


def _val_metric(epochs: tuple[Epoch, ...]) -> tuple[list[int], list[float], bool]:
    """Epoch indices and the metric to minimise: the val loss, or minus the val accuracy."""
    use_loss = sum(e.val_loss is not None for e in epochs) > OVERFIT_PATIENCE
    idx, vals = [], []
    for i, e in enumerate(epochs):
        m = e.val_loss if use_loss else (None if e.val_acc is None else -e.val_acc)
        if m is not None and math.isfinite(m):
            idx.append(i)
            vals.append(float(m))
    return idx, vals, use_loss


@rule("OVERFITTING")
def overfitting(window: Window) -> Finding | None:
    """Validation loss ``OVERFIT_RISE`` above its best for ``OVERFIT_PATIENCE`` epochs while train loss falls."""
    idx, vals, use_loss = _val_metric(window.epochs)
    if len(idx) <= OVERFIT_PATIENCE:
        return None
    k = int(np.argmin(vals))
    best, last = idx[k], idx[-1]
    recent = float(np.median(vals[-OVERFIT_PATIENCE:]))
    need = OVERFIT_RISE * abs(vals[k]) if use_loss else OVERFIT_ACC_DROP
    eb, el = window.epochs[best], window.epochs[last]
    if last - best < OVERFIT_PATIENCE or recent - vals[k] < need:
        return None
    if eb.train_loss is None or el.train_loss is None or el.train_loss >= eb.train_loss:
        return None
    what = (
        f"validation loss rose from {fmt(vals[k])} to {fmt(vals[-1])}"
        if use_loss
        else f"validation accuracy fell from {fmt(-vals[k])} to {fmt(-vals[-1])}"
    )
    return make_finding(
        "OVERFITTING",
        f"Since epoch {eb.epoch} the {what} while the training loss fell from {fmt(eb.train_loss)} to "
        f"{fmt(el.train_loss)}.",
        evidence={
            "best_epoch": eb.epoch,
            "last_epoch": el.epoch,
            "val_loss_best": eb.val_loss,
            "val_loss_last": el.val_loss,
            "val_acc_best": eb.val_acc,
            "val_acc_last": el.val_acc,
            "train_loss_best_epoch": eb.train_loss,
            "train_loss_last": el.train_loss,
        },
        fix=f"keep the checkpoint of epoch {eb.epoch} (early stopping), and add data augmentation, weight decay "
        "or dropout, or more data",
    )
