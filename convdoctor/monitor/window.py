"""The recorded window the rules read: plain numbers in numpy arrays, no tensors, no model.

Every field has a default so the rule tests can build a window from a synthetic loss or
gradient sequence alone (``Window(loss=np.array([...]))``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


def _empty(*shape: int) -> np.ndarray:
    return np.zeros(shape if shape else (0,), dtype=np.float64)


@dataclass(frozen=True)
class Units:
    """Dead-unit bookkeeping of one conv or linear layer.

    Attributes:
        name: the layer's module path.
        idle: per output unit, the number of steps since its weight gradient was last non-zero
            (counted from the first step the monitor saw it).
        kind: the layer's class name (``Conv2d``, ``Linear``).
        activation: the nonlinearity applied to its output in the first forward pass
            (``relu``, ``leaky_relu``, ``hardtanh`` for ReLU6, ...), None when none was seen.
        can_die: whether that nonlinearity has an exactly-zero gradient on a half-line (ReLU,
            ReLU6/hardtanh, threshold, hardswish, hardsigmoid), so a unit can stop learning for good.
    """

    name: str
    idle: np.ndarray
    kind: str = ""
    activation: str | None = None
    can_die: bool = True


@dataclass(frozen=True)
class FrozenBN:
    """Running-stat movement of one BatchNorm layer whose parameters are frozen.

    Attributes:
        name: module path.
        steps: length of the interval measured, in steps.
        updates: how many times its running stats were updated in the interval.
        mean_shift: RMS over channels of ``|mean - mean0| / sqrt(var0 + eps)``.
        var_shift: RMS over channels of ``|log((var + eps) / (var0 + eps))|``.
    """

    name: str
    steps: int
    updates: int
    mean_shift: float
    var_shift: float


@dataclass(frozen=True)
class InitLayer:
    """One conv or linear layer as the first step found it (see :mod:`..init_probe`).

    Attributes:
        name: the layer's module path.
        param: the name of its weight parameter.
        kind: the layer's class name.
        activation: the nonlinearity after it in the first forward pass (None: none seen).
        normalized: whether a normalisation (batch, group, layer, instance or RMS norm) ran
            between it and the next conv/linear layer; None when the pass was not probed.
        fan_in: inputs per output (``weight.shape[1] * kernel elements``, ``nn.init``'s convention).
        units: output units (filters).
        weight_norm: L2 norm of the weight.
        weight_spread: L2 norm of the weight minus its mean filter (0: every filter identical).
        weight_mean: mean of the weight's elements.
        grad_norm: L2 norm of the weight's gradient at that step (NaN: no gradient).
        grad_spread: L2 norm of the gradient minus its mean over filters.
        in_rms: root mean square of the layer's input in the first forward pass (NaN: not seen).
        out_rms: root mean square of its output.
        numel: elements of the weight.
        later_weight_norm: the weight's norm at :attr:`InitRecord.later_step`.
        later_weight_spread: its spread then.
    """

    name: str
    param: str
    kind: str = ""
    activation: str | None = None
    normalized: bool | None = None
    fan_in: int = 1
    units: int = 1
    weight_norm: float = float("nan")
    weight_spread: float = float("nan")
    weight_mean: float = 0.0
    grad_norm: float = float("nan")
    grad_spread: float = float("nan")
    in_rms: float = float("nan")
    out_rms: float = float("nan")
    numel: int = 1
    later_weight_norm: float = float("nan")
    later_weight_spread: float = float("nan")

    @property
    def weight_std(self) -> float:
        """Standard deviation of the weight's elements."""
        mean_square = self.weight_norm**2 / max(self.numel, 1)
        return float(max(mean_square - self.weight_mean**2, 0.0) ** 0.5)


@dataclass(frozen=True)
class InitRecord:
    """The initialisation as the first sampled step saw it: every conv/linear layer in depth order.

    Attributes:
        step: the step recorded (0 for a monitor created before training).
        layers: the layers, in first-forward order.
        later_step: the last step recorded when the record was read back at a sync, where the
            weights were measured again (after the optimizer steps since :attr:`step`).
    """

    step: int = 0
    layers: tuple[InitLayer, ...] = ()
    later_step: int = 0


@dataclass(frozen=True)
class Epoch:
    """What ``end_epoch`` recorded."""

    epoch: int
    step: int
    train_loss: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    train_acc: float | None = None


@dataclass(frozen=True)
class Window:
    """The recent history of one run, as the rules see it.

    Attributes:
        step: steps recorded so far.
        num_classes: classes of the classifier output, when known.
        every: costly statistics are sampled every ``every`` steps.
        loss: the last losses, one per step, oldest first (rank-reduced under DDP).
        loss_start: step index of ``loss[0]``.
        loss_initial: median loss of the first steps of the run (NaN until known).
        loss_best: lowest smoothed loss of the whole run (NaN until known).
        loss_best_step: step at which ``loss_best`` was reached.
        preds: per step, predicted-class counts, shape ``(steps, num_classes)``.
        targets: per step, target-class counts, same shape (all zero where no targets).
        target_bad: per step, ``(below 0, at or above num_classes, soft rows not summing to 1)``
            target counts, shape ``(steps, 3)`` (``ignore_index`` values are not counted).
        bn_batch: per step, the smallest batch a BatchNorm layer normalised in training
            mode (0 when none ran in training mode).
        bn_layers: per step, how many BatchNorm layers ran in training mode.
        grad_steps: the sampled steps, shape ``(S,)``.
        param_names: parameter names in depth (first-forward) order, shape ``(P,)``.
        param_is_weight: which parameters are conv/linear weights (have a unit dimension).
        grad_norms: ``(S, P)`` L2 norm of each gradient (NaN or Inf: non-finite gradient).
        grad_present: ``(S, P)`` whether the parameter was trainable and had a gradient.
        weight_norms: ``(S, P)`` L2 norm of each parameter.
        no_grad: ``(P,)`` consecutive sampled steps (up to now) each trainable parameter had
            ``grad is None``.
        grad_norm_initial: median total gradient norm of the first samples (NaN until known).
        units: dead-unit bookkeeping per conv/linear layer.
        group_names: optimizer parameter groups.
        update_steps: steps at which updates were measured, shape ``(U,)``.
        update_ratio: ``(U, G)`` ``||delta w|| / ||w||`` per group for one optimizer step.
        group_lr: ``(U, G)`` each group's learning rate at those steps.
        group_lr_max: ``(G,)`` the largest learning rate each group has had.
        frozen_bn: running-stat movement of frozen BatchNorm layers in the last interval.
        epochs: the ``end_epoch`` records, oldest first.
        init: the first sampled step's picture of the initialisation (None until read back).
    """

    step: int = 0
    num_classes: int | None = None
    every: int = 1
    loss: np.ndarray = field(default_factory=_empty)
    loss_start: int = 0
    loss_initial: float = float("nan")
    loss_best: float = float("nan")
    loss_best_step: int = 0
    preds: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    targets: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    target_bad: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    bn_batch: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    bn_layers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    grad_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    param_names: tuple[str, ...] = ()
    param_is_weight: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    grad_norms: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    grad_present: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))
    weight_norms: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    no_grad: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    grad_norm_initial: float = float("nan")
    units: tuple[Units, ...] = ()
    group_names: tuple[str, ...] = ()
    update_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    update_ratio: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    group_lr: np.ndarray = field(default_factory=lambda: _empty(0, 0))
    group_lr_max: np.ndarray = field(default_factory=_empty)
    frozen_bn: tuple[FrozenBN, ...] = ()
    epochs: tuple[Epoch, ...] = ()
    init: InitRecord | None = None

    def last_losses(self, n: int) -> np.ndarray:
        """The last ``n`` losses (fewer if fewer were recorded)."""
        return self.loss[-n:] if n > 0 else self.loss[:0]

    def total_grad_norms(self) -> np.ndarray:
        """Per sampled step, the L2 norm over every parameter with a gradient."""
        if self.grad_norms.size == 0:
            return _empty()
        present = (
            self.grad_present
            if self.grad_present.shape == self.grad_norms.shape
            else np.ones(self.grad_norms.shape, dtype=bool)
        )
        g = np.where(present, self.grad_norms, 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(np.sqrt(np.sum(g * g, axis=1)), dtype=np.float64)

    def first_nonfinite(self) -> int | None:
        """The first step with a non-finite loss or non-finite weights, None when all is finite.

        From that step on every statistic derives from NaN/Inf numbers (the optimizer wrote them
        into the weights), so it says nothing on its own about the run.
        """
        found = []
        bad_loss = np.flatnonzero(~np.isfinite(self.loss))
        if bad_loss.size:
            found.append(self.loss_start + int(bad_loss[0]))
        if self.weight_norms.size:
            bad_w = np.flatnonzero(~np.isfinite(self.weight_norms).all(axis=1))
            if bad_w.size:
                found.append(int(self.grad_steps[bad_w[0]]))
        return min(found) if found else None

    def before(self, step: int) -> Window:
        """The window as it stood before ``step``: every per-step and per-sample record cut there.

        Dead-unit idle counts are reduced by the steps cut off (clipped at zero), so a unit
        counts as idle only for the part of its idle run that lies before ``step``.
        """
        keep = max(0, min(self.loss.size, step - self.loss_start))
        s = self.grad_steps < step
        u = self.update_steps < step
        cut = max(0, self.step - step)
        units = tuple(replace(x, idle=np.maximum(x.idle - cut, 0)) for x in self.units)
        return replace(
            self,
            step=min(self.step, step),
            loss=self.loss[:keep],
            preds=self.preds[:keep],
            targets=self.targets[:keep],
            target_bad=self.target_bad[:keep],
            bn_batch=self.bn_batch[:keep],
            bn_layers=self.bn_layers[:keep],
            grad_steps=self.grad_steps[s],
            grad_norms=_cut(self.grad_norms, s),
            grad_present=_cut(self.grad_present, s),
            weight_norms=_cut(self.weight_norms, s),
            update_steps=self.update_steps[u],
            update_ratio=_cut(self.update_ratio, u),
            group_lr=_cut(self.group_lr, u),
            units=units,
            frozen_bn=(),
            epochs=tuple(e for e in self.epochs if e.step < step),
        )


def _cut(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The rows of a per-sample array that ``keep`` selects (left whole when their lengths differ)."""
    return rows[keep] if rows.shape[0] == keep.size else rows
