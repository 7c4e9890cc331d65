"""Put a model in inference mode safely, and rebuild BatchNorm statistics.

``model.eval()`` is the one-line fix of the BatchNorm incident, but it changes the model
for whoever holds it next. These helpers either restore what they change
(:func:`inference_mode`) or return a new model (:func:`prepare_for_inference`,
:func:`recalibrate_bn`); none changes its argument behind the caller's back.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .._compat import NormBase
from ..errors import UsageError

__all__ = ["inference_mode", "prepare_for_inference", "recalibrate_bn"]


@contextlib.contextmanager
def inference_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with every module in eval mode and autograd off; restore each flag after.

    Answers ``BN_TRAIN_MODE``, ``DROPOUT_TRAIN_MODE`` and ``TRAIN_MODE_DIFFERS`` for the
    duration of the block. Unlike ``model.train(previous)``, each submodule gets back its
    own flag (a frozen BatchNorm in eval inside a training model stays in eval).

    Example::

        with convdoctor.fix.inference_mode(model) as m:
            logits = m(x)

    Yields:
        The same model, in eval mode.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            yield model
    finally:
        for m, flag in flags:
            m.training = flag


def prepare_for_inference(model: nn.Module, *, fuse: bool = False, example_input: Any = None) -> nn.Module:
    """A copy of ``model`` ready to serve: eval mode, no gradients, optionally Conv-BN folded.

    Answers ``BN_TRAIN_MODE``, ``DROPOUT_TRAIN_MODE`` and ``TRAIN_MODE_DIFFERS``: the copy
    uses running statistics and no dropout, whatever mode the original was left in.

    Args:
        model: any module; it is not changed.
        fuse: also fold BatchNorm into the preceding convolutions
            (:func:`convdoctor.fix.fuse_conv_bn`).
        example_input: passed to ``fuse_conv_bn`` to find pairs in models ``torch.fx`` cannot trace.

    Returns:
        The new model, in eval mode, every parameter with ``requires_grad=False``.
    """
    if fuse:
        from .fusion import fuse_conv_bn

        ready = fuse_conv_bn(model, example_input)
    else:
        ready = copy.deepcopy(model)
    ready.eval()
    for p in ready.parameters():
        p.requires_grad_(False)
    return ready


def _batches(data: Iterable[Any]) -> Iterator[torch.Tensor]:
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise UsageError(f"recalibrate_bn expects tensors or (x, y) pairs, got {type(x).__name__}")
        yield x


def recalibrate_bn(model: nn.Module, batches: Iterable[Any], *, num_batches: int | None = None) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are recomputed on ``batches``.

    Answers ``BN_STATS_UNINITIALIZED`` and ``BN_STATS_INVALID``. The statistics are reset
    and accumulated as a plain average over the batches (``momentum=None``): each layer's
    ``running_mean`` is the mean of the batch means and ``running_var`` the mean of the
    unbiased batch variances. Only the normalisation layers run in training mode (dropout
    stays off), under ``torch.no_grad()``; the weights are untouched.

    Args:
        model: any module; it is not changed.
        batches: an iterable of input tensors or ``(x, y)`` pairs (a DataLoader), on the
            model's device. Use training-distribution data with training preprocessing.
        num_batches: stop after this many batches (default: all).

    Returns:
        The recalibrated copy, in eval mode.

    Raises:
        UsageError: no batch was given, or an item is not a tensor.
    """
    fresh = copy.deepcopy(model).eval()
    norms = [m for m in fresh.modules() if isinstance(m, NormBase) and m.track_running_stats]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    seen = 0
    with torch.no_grad():
        for x in _batches(batches):
            if num_batches is not None and seen >= num_batches:
                break
            fresh(x)
            seen += 1
    if seen == 0:
        raise UsageError("recalibrate_bn got no batch; pass an iterable of input tensors")
    for copied, src in zip(fresh.modules(), model.modules()):  # a deep copy lists modules in the same order
        if isinstance(copied, NormBase) and isinstance(src, NormBase) and copied.track_running_stats:
            copied.momentum = src.momentum
    return fresh.eval()
