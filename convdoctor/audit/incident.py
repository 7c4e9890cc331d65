"""The BatchNorm inference incident, measured on the user's own model and data.

A model whose BatchNorm layers are still in training mode normalises every batch with
that batch's statistics, so its accuracy depends on the batch size it is served at. The
table puts the accuracy in the model's current mode at each batch size next to the
accuracy in eval mode (running statistics), which is what the model should score.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._guard import preserve_model_state
from ..errors import UsageError, one_line
from ._tensors import logits
from .context import BN_TYPES, rng_guard

#: The incident's batch sizes: one sample, a small batch, a serving batch.
INCIDENT_BATCH_SIZES = (1, 8, 64)

Runner = Callable[[torch.Tensor], Any]
#: Reads the ``(N, classes)`` scores out of a model output (None when absent).
ScoreReader = Callable[[Any], "torch.Tensor | None"]


def accuracy(run: Runner, x: torch.Tensor, y: torch.Tensor, batch_size: int, scores: ScoreReader = logits) -> float:
    """Top-1 accuracy of ``run`` on ``x`` fed in consecutive batches of ``batch_size``.

    The last batch holds the remainder (``len(x) % batch_size`` samples) when the sizes do
    not divide.

    Raises:
        UsageError: the output is not ``(N, classes)`` scores.
    """
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        with torch.no_grad():
            found = scores(run(x[start : start + batch_size]))
        if found is None:
            raise UsageError("accuracy needs a model whose output is (N, classes) scores")
        correct += int((found.argmax(1).cpu() == y[start : start + batch_size].cpu()).sum())
    return correct / x.shape[0]


def accuracy_rows(
    run_current: Runner,
    run_eval: Runner,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_sizes: Sequence[int],
    scores: ScoreReader = logits,
) -> dict[str, Any]:
    """Accuracy in the current mode at each batch size, and in eval mode.

    ``run_eval`` runs first: a training-mode run updates BatchNorm running statistics, and
    an eval run after it would see them (the caller restores buffers afterwards).

    Eval-mode accuracy is measured once, at the largest batch size: in eval mode each
    sample's output does not depend on its batch (the ``batch`` check verifies it).
    """
    eval_acc = accuracy(run_eval, x, y, max(batch_sizes), scores)
    rows: list[dict[str, Any]] = []
    for b in batch_sizes:
        row: dict[str, Any] = {"batch_size": int(b), "eval_accuracy": eval_acc}
        try:
            row["accuracy"] = accuracy(run_current, x, y, int(b), scores)
        except UsageError:
            raise
        except Exception as exc:  # e.g. BatchNorm1d in training mode cannot run on one sample
            row["accuracy"] = None
            row["error"] = one_line(exc)
        rows.append(row)
    measured = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    return {
        "samples": int(x.shape[0]),
        "eval_accuracy": eval_acc,
        "rows": rows,
        "worst_drop": (eval_acc - min(measured)) if measured else None,
    }


def incident_table(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_sizes: Sequence[int] = INCIDENT_BATCH_SIZES
) -> dict[str, Any]:
    """Accuracy of ``model`` as it is (e.g. BatchNorm in training mode) at each batch size vs eval.

    The model is not changed: both runs use deep copies, and the user's state_dict,
    ``training`` flags and RNG state are as before.

    Args:
        model: a classifier whose output is ``(N, classes)`` scores.
        x: inputs, ``(N, ...)``, on the model's device or CPU.
        y: integer labels, ``(N,)``.
        batch_sizes: the batch sizes to serve at.

    Returns:
        ``{"samples", "eval_accuracy", "rows": [{"batch_size", "accuracy", "eval_accuracy"
        [, "error"]}], "worst_drop", "batchnorm_training"}``; ``accuracy`` is None (with
        ``error``) where the model cannot run at that batch size.

    Raises:
        UsageError: mismatched or empty inputs and labels, or a non-classifier output.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.dim() < 2 or y.dim() != 1:
        raise UsageError("incident_table needs x as an (N, ...) tensor and y as (N,) integer labels")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise UsageError(f"x has {x.shape[0]} samples but y has {y.shape[0]} labels; give one label per sample")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise UsageError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    x = x.to(device)
    with preserve_model_state(model, verify=True), rng_guard(device):
        current = copy.deepcopy(model)
        evaluated = copy.deepcopy(model).eval()
        table = accuracy_rows(current, evaluated, x, y.long(), sizes)
    table["batchnorm_training"] = sum(1 for m in model.modules() if isinstance(m, BN_TYPES) and m.training)
    return table
