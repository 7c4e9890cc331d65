"""What one batch tells the monitor: its scalar loss and its class counts (no host sync).

All validation of the user's ``loss``/``outputs``/``targets`` happens here, once, and
every misuse becomes a one-line :class:`~convdoctor.errors.UsageError`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UsageError


def scalar_loss(loss: Any) -> torch.Tensor:
    """The loss as a detached 0-d float tensor (no host sync); raises on a non-scalar."""
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise UsageError(
                f"loss must be a scalar, got shape {tuple(loss.shape)}: pass the value you call "
                "backward() on (e.g. loss.mean())"
            )
        return loss.detach().reshape(()).float()
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        return torch.tensor(float(loss))
    raise UsageError(f"loss must be a scalar tensor or a number, got {type(loss).__name__}")


def logits(outputs: Any) -> torch.Tensor:
    """The class-score tensor inside ``outputs`` (a tensor, or a tuple/dict holding one)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    if isinstance(outputs, dict):
        for key in ("logits", "out", "output"):
            value = outputs.get(key)
            if isinstance(value, torch.Tensor):
                return value
    raise UsageError(
        f"outputs must be the logits tensor (or a tuple/dict holding it under 'logits'), got {type(outputs).__name__}"
    )


#: A soft-target row (float targets shaped like the outputs) that holds a fractional value and
#: sums this far from 1 is counted as malformed. Multi-hot rows (only 0s and 1s: multi-label
#: targets) are never counted. 0.01 leaves room for bf16 rounding over tens of classes.
SOFT_SUM_TOL = 0.01
#: Columns after the class counts: correct predictions, then the malformed targets
#: ``(below 0, at or above num_classes, soft rows not summing to 1)``.
EXTRA = 4


def target_classes(targets: Any, out: torch.Tensor, n_pred: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class indices from index targets or one-hot / soft targets, flattened like the predictions,
    and for soft targets the count of malformed rows (a 0-d device tensor; None for indices)."""
    if not isinstance(targets, torch.Tensor):
        raise UsageError(f"targets must be a tensor, got {type(targets).__name__}")
    if targets.dim() == 0 or targets.shape[0] != out.shape[0]:
        got = tuple(targets.shape)
        raise UsageError(
            f"outputs have batch size {out.shape[0]} but targets have shape {got}: pass the targets of the same batch"
        )
    t = targets.detach()
    soft_bad = None
    if t.is_floating_point() and t.dim() == out.dim():
        fractional = ((t != 0) & (t != 1)).any(1)
        soft_bad = (fractional & ((t.float().sum(1) - 1).abs() > SOFT_SUM_TOL)).sum()
        t = t.argmax(1)
    t = t.reshape(-1).to(torch.int64)
    if t.numel() != n_pred:
        raise UsageError(
            f"targets hold {t.numel()} labels but outputs {n_pred} predictions: pass class "
            "indices shaped like the outputs without the class dimension"
        )
    return t, soft_bad


def class_counts(index: torch.Tensor, c: int) -> torch.Tensor:
    """Class counts without a host sync (``bincount`` reads the max on CUDA; ``scatter_add_`` does not)."""
    counts = torch.zeros(c + 1, dtype=torch.int64, device=index.device)
    counts.scatter_add_(0, index.clamp(0, c), torch.ones_like(index))
    return counts[:c]


def batch_counts(
    outputs: Any, targets: Any, num_classes: int | None, ignore_index: int | None = None
) -> tuple[torch.Tensor | None, int, int | None]:
    """Predicted and target class counts, the correct count and the malformed targets of one
    batch, on the device (no host sync).

    Args:
        outputs: the model's outputs (class scores in dim 1), or None.
        targets: the batch's targets, or None.
        num_classes: the classes expected, or None to take them from ``outputs``.
        ignore_index: a target value the loss skips (not counted as out of range).

    Returns:
        ``(counts, batch, num_classes)``: ``counts`` is ``[pred (C), target (C), correct,
        below 0, at or above C, malformed soft rows]``, or None when the outputs are not class
        scores; ``batch`` weights the loss under DDP.

    Raises:
        UsageError: outputs with another number of classes, or targets that do not match them.
    """
    if outputs is None:
        return None, 1, num_classes
    out = logits(outputs)
    if out.dim() < 2:
        return None, int(out.shape[0]) if out.dim() == 1 else 1, num_classes
    n, c = int(out.shape[0]), int(out.shape[1])
    if num_classes is not None and c != num_classes:
        raise UsageError(
            f"outputs have {c} classes in dim 1 but Monitor(num_classes={num_classes}); "
            "pass the logits, shape (batch, num_classes, ...)"
        )
    pred = out.detach().argmax(1).reshape(-1)
    pred_counts = class_counts(pred, c)
    if targets is None:
        return torch.cat([pred_counts, torch.zeros(c + EXTRA, dtype=torch.int64, device=pred.device)]), n, c
    t, soft_bad = target_classes(targets, out, pred.numel())
    valid = (t >= 0) & (t < c)
    counted = t != ignore_index if ignore_index is not None else torch.ones_like(valid)
    correct = ((pred == t) & valid).sum().reshape(1)
    if c < 2:  # one logit (BCE on 0/1 targets) is not a C-class classifier: its targets are not indices
        bad = torch.zeros(EXTRA - 1, dtype=torch.int64, device=t.device)
    else:
        bad = torch.stack(
            [
                ((t < 0) & counted).sum(),
                ((t >= c) & counted).sum(),
                soft_bad if soft_bad is not None else torch.zeros((), dtype=torch.int64, device=t.device),
            ]
        )
    return torch.cat([pred_counts, class_counts(torch.where(valid, t, c), c), correct, bad.to(torch.int64)]), n, c
