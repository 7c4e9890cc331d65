"""The host side of the collector: what one sync's read-back adds to the run's history.

:class:`~convdoctor.monitor.stats.Collector` records on the device and copies one packed
tensor per sync to the host (``Collector.pull``); the methods here unpack it into the step
and sample histories the rules read, and keep the run's reference values (initial and best
loss, initial gradient norm, epoch sums) and the thinned plot curves. They touch only numpy
arrays and Python numbers: nothing here launches a kernel or syncs a device.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from .batch import EXTRA

#: Steps whose median is the run's initial loss; samples whose median is the initial grad norm.
INITIAL_STEPS = 10
#: Rolling-median width used for the best (lowest) loss of the run: smooths batch noise.
SMOOTH_STEPS = 10
#: Points kept per curve for plots; older points are thinned 2:1 when this is exceeded.
PLOT_POINTS = 2048


class HostHistory:
    """Host-side history of a :class:`~convdoctor.monitor.stats.Collector` (its base class).

    The attributes are set by ``Collector.__init__``; they are declared here for the methods
    that update them.
    """

    step: int
    num_classes: int | None
    _pending: dict[str, list[Any]]
    _steps: dict[str, deque[Any]]
    _samples: dict[str, deque[Any]]
    group_lr_max: list[float]
    loss_initial: float
    loss_best: float
    loss_best_step: int
    grad_norm_initial: float
    epoch_correct: float
    epoch_seen: float
    epoch_loss_sum: float
    epoch_loss_n: float
    plot: dict[str, list[Any]]
    _stride: dict[str, int]

    def _read_steps(self, host: np.ndarray) -> None:
        p = self._pending
        n, c = host.shape[0], self.num_classes or 0
        with np.errstate(invalid="ignore", divide="ignore"):
            losses = host[:, 0] / host[:, 1]
        for i in range(n):
            self._steps["loss"].append(float(losses[i]))
            self._steps["pred"].append(host[i, 2 : 2 + c].astype(np.int64))
            self._steps["tgt"].append(host[i, 2 + c : 2 + 2 * c].astype(np.int64))
            self._steps["bad"].append(host[i, 3 + 2 * c : 2 + 2 * c + EXTRA].astype(np.int64))
            self._steps["bn"].append(p["bn"][i])
        ok = np.isfinite(losses)
        self.epoch_loss_sum += float(losses[ok].sum())
        self.epoch_loss_n += float(ok.sum())
        self.epoch_correct += float(host[:, 2 + 2 * c].sum())
        self.epoch_seen += float(host[:, 2 + c : 2 + 2 * c].sum())
        self._update_loss_refs()
        self._plot_add("loss", list(range(self.step - n, self.step)), [float(x) for x in losses])

    def _read_samples(self, host: np.ndarray) -> None:
        p = self._pending
        gn, wn = np.split(host, 2, axis=1)
        for i, s in enumerate(p["gstep"]):
            self._samples["step"].append(s)
            self._samples["gn"].append(gn[i])
            self._samples["wn"].append(wn[i])
            self._samples["present"].append(np.array(p["present"][i], dtype=bool))
        if math.isnan(self.grad_norm_initial) and len(self._samples["step"]) >= INITIAL_STEPS:
            tot = np.sqrt(np.nansum(np.stack(list(self._samples["gn"]))[:INITIAL_STEPS] ** 2, axis=1))
            self.grad_norm_initial = float(np.median(tot))
        self._plot_add("grad", list(p["gstep"]), [row.tolist() for row in gn])

    def _read_updates(self, host: np.ndarray) -> None:
        with np.errstate(invalid="ignore"):
            ratios = np.sqrt(host[..., 0]) / np.maximum(np.sqrt(host[..., 1]), 1e-12)
        for s, r, lr in zip(self._pending["ustep"], ratios, self._pending["lr"]):
            self._samples["ustep"].append(s)
            self._samples["ratio"].append(r)
            self._samples["lr"].append(np.array(lr, dtype=np.float64))
            if len(self.group_lr_max) != len(lr):
                self.group_lr_max = [0.0] * len(lr)
            self.group_lr_max = [max(a, b) for a, b in zip(self.group_lr_max, lr)]

    def _update_loss_refs(self) -> None:
        """Initial loss (median of the first steps) and the best rolling-median loss so far."""
        losses = np.asarray(self._steps["loss"], dtype=np.float64)
        start = self.step - len(losses)
        if math.isnan(self.loss_initial) and start == 0 and len(losses) >= INITIAL_STEPS:
            self.loss_initial = float(np.median(losses[:INITIAL_STEPS]))
        if len(losses) < SMOOTH_STEPS:
            return
        med = np.median(np.lib.stride_tricks.sliding_window_view(losses, SMOOTH_STEPS), axis=1)
        med = np.where(np.isfinite(med), med, np.inf)
        i = int(np.argmin(med))
        if np.isfinite(med[i]) and (math.isnan(self.loss_best) or med[i] < self.loss_best):
            self.loss_best, self.loss_best_step = float(med[i]), start + i + SMOOTH_STEPS - 1

    def _plot_add(self, kind: str, steps: list[int], values: list[Any]) -> None:
        """Append to a plot curve, thinning it 2:1 whenever it exceeds ``PLOT_POINTS``."""
        xs, ys = self.plot[f"{kind}_step"], self.plot[kind]
        for s, v in zip(steps, values):
            if s % self._stride[kind] == 0:
                xs.append(s)
                ys.append(v)
        if len(xs) > PLOT_POINTS:
            self._stride[kind] *= 2
            keep = [i for i, s in enumerate(xs) if s % self._stride[kind] == 0]
            self.plot[f"{kind}_step"] = [xs[i] for i in keep]
            self.plot[kind] = [ys[i] for i in keep]
