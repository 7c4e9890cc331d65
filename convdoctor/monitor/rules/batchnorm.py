"""Rules on BatchNorm: batches too small for its statistics, and frozen layers that still update."""

from __future__ import annotations

import numpy as np

from ...findings import Finding, make_finding
from ..window import Window
from ._registry import fmt, rule

#: BN_SMALL_BATCH: the median batch BatchNorm normalised in training mode over the last
#: ``BN_STEPS`` steps is below this. Wu & He (Group Normalization, 2018, Fig. 1): ResNet-50's
#: ImageNet error with BN is flat from batch 32 to 16 per GPU and climbs below (24.8% at 8,
#: 27.3% at 4, 34.7% at 2).
BN_MIN_BATCH = 16
BN_STEPS = 20

#: FROZEN_BN_UPDATING: a frozen BatchNorm layer's running stats moved by at least this much in
#: one sync interval, in RMS standard deviations of the old mean (or RMS |log| variance ratio).
FROZEN_BN_SHIFT = 0.01


@rule("BN_SMALL_BATCH")
def bn_small_batch(window: Window) -> Finding | None:
    """BatchNorm in training mode on a median batch below ``BN_MIN_BATCH`` over ``BN_STEPS`` steps."""
    batch, layers = window.bn_batch[-BN_STEPS:], window.bn_layers[-BN_STEPS:]
    trained = batch[layers > 0]
    if batch.size < BN_STEPS or trained.size < BN_STEPS // 2:
        return None
    median = float(np.median(trained))
    if median >= BN_MIN_BATCH:
        return None
    n_layers = int(layers.max())
    return make_finding(
        "BN_SMALL_BATCH",
        f"{n_layers} BatchNorm layers train on batches of {int(median)} (median of the last {BN_STEPS} steps); "
        f"below {BN_MIN_BATCH} their batch statistics are too noisy and train/eval behaviour drifts apart.",
        evidence={
            "batch_size": median,
            "bn_layers_training": n_layers,
            "min_batch": BN_MIN_BATCH,
            "steps": int(trained.size),
        },
        fix="when fine-tuning a pretrained backbone, freeze its BatchNorm (convdoctor.fix.freeze_bn(model)); "
        "otherwise use a larger batch, GroupNorm, or SyncBatchNorm across GPUs (gradient accumulation "
        "enlarges the optimizer's batch, not BatchNorm's)",
    )


@rule("FROZEN_BN_UPDATING")
def frozen_bn_updating(window: Window) -> Finding | None:
    """Frozen BatchNorm layers whose running stats moved ``FROZEN_BN_SHIFT`` in the last interval."""
    moved = [b for b in window.frozen_bn if b.updates > 0 and max(b.mean_shift, b.var_shift) >= FROZEN_BN_SHIFT]
    if not moved:
        return None
    worst = max(moved, key=lambda b: max(b.mean_shift, b.var_shift))
    return make_finding(
        "FROZEN_BN_UPDATING",
        f"{len(moved)} BatchNorm layers with frozen parameters updated their running statistics "
        f"{worst.updates} times in the last {worst.steps} steps; {worst.name}'s mean moved "
        f"{fmt(worst.mean_shift)} standard deviations (variance log-ratio {fmt(worst.var_shift)}).",
        evidence={
            "layers": [b.name for b in moved],
            "count": len(moved),
            "worst_layer": worst.name,
            "mean_shift": worst.mean_shift,
            "var_shift": worst.var_shift,
            "updates": worst.updates,
            "steps": worst.steps,
        },
        fix="the backbone is frozen but model.train() put its BatchNorm back in training mode: call "
        "convdoctor.fix.freeze_bn(backbone), which keeps it in eval mode across model.train()",
        where=worst.name,
    )
