"""The sample's verdict on BatchNorm statistics that look never updated: recompute them and compare.

A layer holding mean 0 / variance 1 with no batch counted is what a fresh model holds, and also
what a trained model holds after ``load_state_dict(..., strict=False)`` from a checkpoint that
dropped the buffers. The buffers cannot tell the two apart; the user's sample can. The statistics
are recomputed on the sample with :func:`convdoctor.fix.recalibrate_bn` (on the deep copy it
returns: the user's model is only run, in eval mode, without autograd), and the predictions of
the model as loaded are compared with those of the recalibrated copy:

* **with targets:** the recalibrated copy is right on ``BN_ACCURACY_GAIN`` (10 points) more of
  the sample, and McNemar's exact test on the samples that changed (wrong -> right against
  right -> wrong) gives a p-value below ``BN_P_VALUE`` (1e-3). A fresh model is at chance
  before and after: its changes go both ways and the test fails (and a sample of 9 or fewer
  can never pass it: ``0.5**9 > 1e-3``).
* **without targets:** the recalibrated copy changes at least ``BN_DISAGREEMENT`` (10%) of the
  predictions, and it is confident and discriminating: its mean top-1 probability, rescaled so
  that chance is 0 and certainty 1, is at least ``BN_CONFIDENT`` (0.5), and no class takes more
  than ``BN_TOP_SHARE`` (half) of its predictions, on at least ``BN_MIN_SAMPLES`` (16) samples.
  Fresh models (20 torchvision and 20 timm classifiers with random weights, recalibrated on
  random images) reach a rescaled confidence of 0.01 at most; a randomly initialised model that
  recalibration makes "confident" puts every input in one class, which the second condition
  rejects. A trained classifier on its own data is both confident and spread over the classes.

Either one is certain evidence that the weights are trained and the statistics wrong: the
finding becomes an ``error`` with the numbers. The evidence also lists, per layer, the
statistics the sample gives (the recalibrated running mean and variance) against the loaded ones.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from .._compat import NormBase
from ..fix.inference import recalibrate_bn
from .context import CheckContext

logger = logging.getLogger(__name__)

#: With targets: the accuracy the recalibrated copy must gain (absolute)...
BN_ACCURACY_GAIN = 0.10
#: ...with McNemar's exact one-sided p-value on the changed samples below this.
BN_P_VALUE = 1e-3
#: Without targets: the share of predictions that recalibration must change...
BN_DISAGREEMENT = 0.10
#: ...the recalibrated copy's mean top-1 probability, rescaled from chance (0) to certainty (1)...
BN_CONFIDENT = 0.5
#: ...the largest share one class may take of its predictions...
BN_TOP_SHARE = 0.5
#: ...and the fewest samples that can show all of it.
BN_MIN_SAMPLES = 16
#: With targets, McNemar's tail is 0.5**k at best (every changed sample went wrong -> right), so
#: fewer samples than this can never reach ``BN_P_VALUE``.
BN_MIN_SAMPLES_WITH_TARGETS = math.ceil(math.log2(1 / BN_P_VALUE))
#: Samples per forward pass (recalibration averages the statistics of these batches).
RECAL_BATCH = 32
#: Layers listed in the evidence.
MAX_LAYERS = 10


def _binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): McNemar's exact one-sided p-value."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n if n else 1.0


def _scores(ctx: CheckContext, model: nn.Module) -> torch.Tensor | None:
    """``(N, classes)`` float scores of ``model`` on the whole sample, in batches."""
    assert ctx.scores is not None
    parts = []
    for chunk in torch.split(ctx.sample, RECAL_BATCH):
        found = ctx.scores(ctx.forward(chunk, model))
        if found is None:
            return None
        parts.append(found.detach().float().cpu())
    return torch.cat(parts)


def _confidence(scores: torch.Tensor) -> float:
    """Mean top-1 probability rescaled: 0 at chance (1/C), 1 at certainty."""
    c = scores.shape[1]
    top = float(scores.softmax(1).max(1).values.mean())
    return (top - 1 / c) / (1 - 1 / c) if c > 1 else 0.0


def _layer_stats(before: nn.Module, after: nn.Module, names: set[str]) -> list[dict[str, Any]]:
    """Loaded vs sample statistics of the named layers (the recalibrated copy's are the sample's)."""
    rows = []
    new = dict(after.named_modules())
    for name, m in before.named_modules():
        n = new.get(name)
        if name not in names or not isinstance(m, NormBase) or not isinstance(n, NormBase):
            continue
        assert m.running_mean is not None and m.running_var is not None
        assert n.running_mean is not None and n.running_var is not None
        scale = (m.running_var.double() + m.eps).sqrt()
        mean, var = n.running_mean.double(), n.running_var.double()
        rows.append(
            {
                "name": name,
                "running_mean_abs_max": float(m.running_mean.abs().max()),
                "running_var_median": float(m.running_var.double().median()),
                "sample_mean_abs_max": float(mean.abs().max()),
                "sample_var_median": float(var.median()),
                # in the loaded statistics' own units: RMS over channels
                "mean_shift": float(((mean - m.running_mean.double()) / scale).square().mean().sqrt()),
                "var_log_ratio": float(((var + m.eps) / (m.running_var.double() + m.eps)).log().square().mean().sqrt()),
            }
        )
    return rows


def recalibration_evidence(ctx: CheckContext, names: set[str]) -> dict[str, Any] | None:
    """Recompute the statistics on a copy and compare; None when the sample cannot say.

    Args:
        ctx: the audit context (its model is copied, never changed).
        names: the BatchNorm layers whose statistics look never updated.

    Returns:
        ``{"proven": bool, "recalibration": {...numbers...}, "layers": [...]}``, or None for a
        synthetic sample, outputs without class scores, keyword/image-list inputs, or fewer samples than
        could prove anything (``BN_MIN_SAMPLES``; ``BN_MIN_SAMPLES_WITH_TARGETS`` with targets): the
        copy and its forwards are skipped then (seconds on a large model).
    """
    fewest = BN_MIN_SAMPLES_WITH_TARGETS if ctx.targets is not None else BN_MIN_SAMPLES
    if ctx.synthetic or ctx.scores is None or ctx.call is not None or ctx.n < fewest:
        return None
    try:
        before = ctx.eval_model()  # the model itself when in eval mode: only read, under no_grad
        chunks = torch.tensor_split(ctx.sample, math.ceil(ctx.n / RECAL_BATCH))  # no batch of 1 for BatchNorm1d
        after = recalibrate_bn(before, chunks)
        s0, s1 = _scores(ctx, before), _scores(ctx, after)
    except Exception as exc:  # an uncopyable model, a layer that cannot run in training mode: no verdict
        logger.debug("BatchNorm recalibration on the sample failed: %s", exc)
        return None
    if s0 is None or s1 is None:
        return None
    p0, p1 = s0.argmax(1), s1.argmax(1)
    top_share = float(torch.bincount(p1).max()) / ctx.n
    numbers: dict[str, Any] = {
        "samples": ctx.n,
        "agreement": float((p0 == p1).float().mean()),
        "confidence_before": _confidence(s0),
        "confidence_after": _confidence(s1),
        "top_class_share_after": top_share,
    }
    if ctx.targets is not None:
        y = ctx.targets.cpu()
        fixed, broke = int(((p0 != y) & (p1 == y)).sum()), int(((p0 == y) & (p1 != y)).sum())
        numbers.update(
            accuracy_before=float((p0 == y).float().mean()),
            accuracy_after=float((p1 == y).float().mean()),
            wrong_to_right=fixed,
            right_to_wrong=broke,
            p_value=_binomial_tail(fixed, fixed + broke),
        )
        proven = (
            numbers["accuracy_after"] - numbers["accuracy_before"] >= BN_ACCURACY_GAIN
            and numbers["p_value"] < BN_P_VALUE
        )
    else:
        proven = (
            ctx.n >= BN_MIN_SAMPLES
            and 1 - numbers["agreement"] >= BN_DISAGREEMENT
            and numbers["confidence_after"] >= BN_CONFIDENT
            and top_share <= BN_TOP_SHARE
        )
    return {"proven": proven, "recalibration": numbers, "layers": _layer_stats(before, after, names)[:MAX_LAYERS]}
