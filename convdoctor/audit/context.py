"""What every audit check receives: the model to run, the sample, and a place for evidence.

``ctx.model`` is never something a check may keep changes in: it is a snapshot (a deep
copy) whenever the user's model has a module in training mode or lives on another device,
and the runner restores every buffer and ``training`` flag after each check either way.
Checks switch modes only through :meth:`CheckContext.modes`, which restores the flags.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch
from torch import nn

from .._compat import BatchNormBase, DropoutBase
from ..capture.once import Captures
from ..graph import Graph
from ._tensors import Scores

#: Base of the dropout classes whose ``training`` flag turns random masking on.
DROPOUT_TYPES = DropoutBase

#: Base of the BatchNorm classes (BatchNorm1d/2d/3d, SyncBatchNorm, the lazy variants).
BN_TYPES = BatchNormBase


class CheckSkipped(Exception):
    """Raised by a check that does not apply; the message is the reason."""


@dataclass
class CheckContext:
    """Inputs shared by all checks of one audit.

    Attributes:
        model: the module to run (a snapshot when the user's model is not in eval mode).
        sample: a batch of inputs on ``device``, ``(N, ...)``.
        targets: class labels for ``sample`` (``(N,)`` int64), or None.
        batch_sizes: the batch sizes to test, ascending.
        device: where the model runs.
        synthetic: the sample is random data, not the user's.
        num_classes: the number of classes of the scores when the output holds ``(N, classes)``
            scores (see ``scores``), else None.
        scores: where the class scores sit in the output (``_tensors.Scores``), or None.
        call: how a slice of ``sample`` becomes the model's arguments (keyword inputs, a
            detector's image list); None for a plain ``model(x)``.
        captures: graphs of this model its caller already captured (``check`` shares
            inspect's), for the checks that read the graph's structure; None to capture afresh.
        evidence: the running check's numbers (the runner gives each check a fresh dict).
    """

    model: nn.Module
    sample: torch.Tensor
    targets: torch.Tensor | None
    batch_sizes: tuple[int, ...]
    device: torch.device
    synthetic: bool
    num_classes: int | None = None
    scores: Scores | None = None
    call: Callable[[torch.Tensor], tuple[tuple[Any, ...], dict[str, Any]]] | None = None
    captures: Captures | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    _eval_copy: nn.Module | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Number of samples available."""
        return int(self.sample.shape[0])

    def take(self, n: int, *, offset: int = 0) -> torch.Tensor:
        """``n`` samples starting at ``offset``, cycling through the sample when it is shorter."""
        idx = (torch.arange(n) + offset) % self.n
        return self.sample[idx.to(self.sample.device)]

    def forward(self, x: torch.Tensor, model: nn.Module | None = None) -> Any:
        """Run the model (or ``model``) on ``x`` without autograd."""
        args, kwargs = ((x,), {}) if self.call is None else self.call(x)
        with torch.no_grad():
            return (model or self.model)(*args, **kwargs)

    @contextlib.contextmanager
    def modes(
        self, *, all_eval: bool = False, dropout_eval: bool = False, only_bn: bool = False
    ) -> Iterator[nn.Module]:
        """Temporarily put modules in eval mode: all of them, the dropout ones, or all but BatchNorm."""
        saved = [(m, m.training) for m in self.model.modules()]
        try:
            for m, _ in saved:
                if (
                    all_eval
                    or (dropout_eval and isinstance(m, DROPOUT_TYPES))
                    or (only_bn and not isinstance(m, BN_TYPES))
                ):
                    m.training = False
            yield self.model
        finally:
            for m, flag in saved:
                m.training = flag

    def training_modules(self) -> list[tuple[str, nn.Module]]:
        """``(path, module)`` of every module in training mode."""
        return [(name, m) for name, m in self.model.named_modules() if m.training]

    def eval_model(self) -> nn.Module:
        """A module in eval mode: the model itself when already in eval, else one cached deep copy.

        Checks must not change it (export and fusion work on what this returns).
        """
        if not self.training_modules():
            return self.model
        if self._eval_copy is None:
            self._eval_copy = copy.deepcopy(self.model).eval()
        return self._eval_copy

    def structure(self, x: torch.Tensor, model: nn.Module | None = None) -> Graph:
        """The op graph of the model (or ``model``) called on ``x``, for its data flow only.

        With ``captures``, a graph already captured at another batch size or on another device
        serves (see :meth:`~convdoctor.capture.once.Captures.structure`); else ``x`` is captured.
        """
        args, kwargs = ((x,), {}) if self.call is None else self.call(x)
        if self.captures is None:
            self.captures = Captures()
        return self.captures.structure(model or self.model, args, kwargs, mode="eval")

    def skip(self, reason: str) -> NoReturn:
        """Stop the running check with status ``skipped``."""
        raise CheckSkipped(reason)


def rng_guard(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Fork the global RNG (CPU, and ``device`` when it is CUDA): dropout in a check leaves no trace."""
    if device.type != "cuda":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.random.fork_rng(devices=[index], device_type="cuda")


@contextlib.contextmanager
def buffers_restored(model: nn.Module) -> Iterator[None]:
    """Copy every buffer (BatchNorm running stats, counters) and write it back on exit.

    A training-mode forward updates BatchNorm's running statistics in place; this undoes
    it. Buffers are small next to the weights, so the copy is cheap.
    """
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                if b.shape == value.shape:
                    b.copy_(value)


def label(model: nn.Module, path: str) -> str:
    """``layer1.0.bn1 (BatchNorm2d)`` for messages; the root is ``<root>``."""
    try:
        kind = type(model.get_submodule(path)).__name__
    except AttributeError:
        return path or "<root>"
    return f"{path or '<root>'} ({kind})"
