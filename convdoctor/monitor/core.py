"""The :class:`Monitor`: a cheap collector, pure rules and thin adapters, wired together.

``step`` only records (:mod:`.stats`); every ``SYNC_EVERY`` steps the record is read back once
and the rules of :mod:`.rules` judge it; episodes and root-cause merging live here.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..findings import Finding
from ..results.base import json_safe, sort_findings
from ..results.monitor import MonitorReport
from .ddp import make_reducer
from .histograms import HistogramProbe
from .hooks import is_compiled, unit_owners, unwrap
from .init_probe import InitProbe
from .rules import attach, evaluate
from .stats import SYNC_EVERY, Collector
from .tensorboard import TensorBoardLog
from .window import Epoch, Window

#: Steps a rule must stay quiet before its episode ends and it may fire again: rules read
#: windows of 20-150 steps, so a shorter gap would re-report one episode as it fades.
EPISODE_GAP = 100
#: A loss at or below this has (numerically) zero gradients by right: no misuse warning.
ZERO_LOSS = 1e-6


class Monitor:
    """Watches a training run and names what goes wrong, with evidence and the fix.

    The monitor adds forward hooks (removed by :meth:`close`) and, given an optimizer, a
    step post-hook; it never changes the model's parameters, buffers or training flags.

    Args:
        model: the module being trained (a DistributedDataParallel wrapper is fine).
        num_classes: classes of the classifier output; read from ``outputs.shape[1]`` if None.
        every: sample the costly statistics (gradient and weight norms, dead units, update
            ratios) every ``every`` steps; the loss and predictions are recorded every step.
        ddp: None reduces across ranks when ``torch.distributed`` is initialised with more
            than one rank, False never, True over the default group, or a process group.
            DDP and FSDP2 (``fully_shard``; create the monitor after sharding) are both handled.
        ignore_index: the target value the loss skips (``CrossEntropyLoss``'s default -100, or
            e.g. 255 for void pixels); other targets outside ``[0, num_classes)`` raise
            ``DEGENERATE_TARGETS``. None counts every out-of-range target.
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or any object with its ``add_scalar``,
            ``add_text`` and ``add_histogram_raw``): at each sync the loss, gradient norm, update
            ratios, epoch numbers, per-layer histograms and each new finding are written to it
            (see :mod:`.tensorboard`). Under DDP pass it on one rank only.
        histograms: keep per-layer gradient and activation histograms every ``HIST_EVERY``
            sampled steps (:mod:`.histograms`); False turns them off.

    Raises:
        UsageError: a non-module model, ``every < 1``, ``num_classes < 1`` or a writer that is not one.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int | None = None,
        every: int = 1,
        ddp: Any = None,
        ignore_index: int | None = -100,
        writer: Any = None,
        histograms: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UsageError(f"Monitor needs the nn.Module being trained, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UsageError(f"every must be a positive integer (1 samples every step), got {every!r}")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise UsageError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        self._reducer = make_reducer(ddp)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise UsageError(f"ignore_index must be an integer target value or None, got {ignore_index!r}")
        self._collector = Collector(
            model, num_classes=num_classes, every=every, reducer=self._reducer, ignore_index=ignore_index
        )
        col = self._collector
        owners = unit_owners(col.model)
        eager = not is_compiled(model)
        self._init = InitProbe(
            owners, col.activations, enabled=not col.layout.sharded, forward=eager, reducer=self._reducer
        )
        self._hist = HistogramProbe(owners, lambda: col.step, every, enabled=bool(histograms), activations=eager)
        self._log = TensorBoardLog(writer) if writer is not None else None
        self._name = type(unwrap(model)).__name__
        self._findings: list[Finding] = []
        self._last_fired: dict[str, int] = {}
        self._events: list[dict[str, Any]] = []
        self._epochs: list[Epoch] = []
        self._window: Window | None = None
        self._warned_zero = False

    # ---------------------------------------------------------------- protocol
    def step(
        self, loss: Any, outputs: Any = None, targets: Any = None, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Record one training step. Call after ``loss.backward()`` and before ``optimizer.step()``.

        Args:
            loss: the scalar loss of the batch (the tensor ``backward()`` was called on).
            outputs: the model's logits, shape ``(batch, num_classes, ...)``.
            targets: class indices (or one-hot/soft targets) of the same batch.
            optimizer: the optimizer about to step; enables update-to-weight ratios per group.

        Raises:
            UsageError: a non-scalar loss, outputs and targets of different batch sizes, or
                no gradient at all (``step`` called before ``backward``).
        """
        self.record_gradients(optimizer)
        self.record_batch(loss, outputs, targets)

    def record_gradients(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """The gradient half of :meth:`step`, for adapters that see gradients and the loss apart."""
        step = self._collector.step
        self._collector.record_gradients(optimizer)
        if step % self._collector.every == 0:
            self._init.record_gradients(step)
        self._hist.record_gradients(step)

    def record_batch(self, loss: Any, outputs: Any = None, targets: Any = None) -> None:
        """The loss/prediction half of :meth:`step`; advances the step count."""
        self._collector.record_batch(loss, outputs, targets)
        if self._collector.step % SYNC_EVERY == 0:
            self.flush()

    def end_epoch(
        self, train_loss: float | None = None, val_loss: float | None = None, val_acc: float | None = None
    ) -> str:
        """Close an epoch: record its numbers, run the rules, return a one-line summary.

        Args:
            train_loss: the epoch's training loss; the mean of the recorded step losses if None.
            val_loss: validation loss, enables OVERFITTING.
            val_acc: validation accuracy in [0, 1] (used for OVERFITTING when no val_loss).

        Returns:
            The summary line, e.g. ``"epoch 3 (step 188): loss 0.01396, acc 99.7%, val loss 0.07778,
            val acc 99.0%, no findings"``.
        """
        col = self._collector
        col.pull()
        if train_loss is None and col.epoch_loss_n:
            train_loss = col.epoch_loss_sum / col.epoch_loss_n
        train_acc = col.epoch_correct / col.epoch_seen if col.epoch_seen else None
        col.epoch_loss_sum = col.epoch_loss_n = col.epoch_correct = col.epoch_seen = 0.0
        self._epochs.append(
            Epoch(
                len(self._epochs),
                col.step,
                _opt_float(train_loss),
                _opt_float(val_loss),
                _opt_float(val_acc),
                train_acc,
            )
        )
        self.flush()
        return self.summary()

    def flush(self) -> list[Finding]:
        """Read back what was recorded, run the rules now, and return the findings that are new.

        Under DDP every rank must call it (it reduces across ranks); :meth:`step` and
        :meth:`end_epoch` call it at step counts that every rank reaches together.
        """
        window = replace(self._collector.sync(tuple(self._epochs)), init=self._init.read(self._collector.step - 1))
        histograms = self._hist.pull()
        self._window = window
        self._warn_zero_gradients(window)
        new = self._judge(window)
        if self._log is not None:
            self._log.log(window, histograms, new)
        return new

    @property
    def findings(self) -> list[Finding]:
        """Every finding so far, newest last (flushes first, except under DDP where that is collective)."""
        if not self._reducer.enabled and self._collector.pending:
            self.flush()
        return list(self._findings)

    # ---------------------------------------------------------------- judging
    def _judge(self, window: Window) -> list[Finding]:
        active = {c for c, last in self._last_fired.items() if window.step - last <= EPISODE_GAP}
        fired, late = evaluate(window, active)
        for code, consequences in late.items():
            self._merge_consequences(code, consequences)
        new = []
        for code, finding in fired.items():
            if code in active:
                self._merge_consequences(code, finding.evidence.get("consequences", []))
            else:
                finding = replace(finding, evidence={**finding.evidence, "step": window.step})
                self._findings.append(finding)
                self._events.append({"step": window.step, "code": code, "where": finding.where})
                new.append(finding)
            self._last_fired[code] = window.step
        return new

    def _merge_consequences(self, code: str, later: list[dict[str, str]]) -> None:
        """A root still in its episode may have gained consequences: add them to its reported finding."""
        if not later:
            return
        for i in range(len(self._findings) - 1, -1, -1):
            if self._findings[i].code == code:
                self._findings[i] = attach(self._findings[i], list(later))
                return

    def _warn_zero_gradients(self, window: Window) -> None:
        """Warn once when every gradient of a step is exactly zero although its loss is not: the
        sign of ``step()`` called after ``zero_grad()``. A loss that reached zero (a model that fits
        constant labels exactly) has zero gradients by right and does not warn."""
        g, present = window.grad_norms[-SYNC_EVERY:], window.grad_present[-SYNC_EVERY:]
        if self._warned_zero or g.size == 0 or not present.any():
            return
        at = window.grad_steps[-SYNC_EVERY:] - window.loss_start
        ok = (at >= 0) & (at < window.loss.size)
        loss = np.full(at.shape, np.nan)
        loss[ok] = window.loss[at[ok]]
        zero = np.all(np.where(present, g, 0.0) == 0.0, axis=1)
        if (zero & ~(np.abs(loss) <= ZERO_LOSS)).any():
            self._warned_zero = True
            warnings.warn(
                "Monitor.step() saw every gradient exactly zero: call it after loss.backward() and "
                "before optimizer.zero_grad()",
                stacklevel=3,
            )

    # ---------------------------------------------------------------- reporting
    def summary(self) -> str:
        """One line: the latest epoch's numbers (or the step count) and the findings so far."""
        parts = []
        if self._epochs:
            e = self._epochs[-1]
            parts.append(f"epoch {e.epoch} (step {e.step}):")
            for label, value, pct in (
                ("loss", e.train_loss, False),
                ("acc", e.train_acc, True),
                ("val loss", e.val_loss, False),
                ("val acc", e.val_acc, True),
            ):
                if value is not None:
                    parts.append(f"{label} {value:.1%}," if pct else f"{label} {value:.4g},")
        else:
            parts.append(f"step {self._collector.step}:")
        found = [f"{f.code} (step {f.evidence.get('step')})" for f in self._findings]
        parts.append(f"{len(found)} findings: {', '.join(found)}" if found else "no findings")
        return " ".join(parts)

    def report(self, *, figures: bool = False) -> MonitorReport:
        """The run's findings and summary numbers, for ``convdoctor.report.render``.

        Args:
            figures: also carry the plot data (:meth:`history`), from which the HTML renderer
                draws the loss and gradient-norm charts (about 0.2 s with matplotlib), and
                ``convdoctor.report.monitor_plot.save_monitor_plots`` writes them as PNG files.
        """
        from ._report import build_report

        findings = self.findings
        return build_report(
            self._name,
            sort_findings(findings),
            self._collector,
            self._window,
            epochs=tuple(asdict(e) for e in self._epochs),
            events=tuple(self._events),
            summary=self.summary(),
            history=self.history() if figures else None,
        )

    def to_json(self) -> str:
        """The report as one JSON document (NaN/Inf written as strings), with the plot data
        under ``history`` so that ``convdoctor check --monitor FILE`` can draw the curves."""
        doc = self.report().to_dict()
        doc["history"] = self.history()
        return json.dumps(json_safe(doc), indent=2, allow_nan=False)

    def history(self) -> dict[str, Any]:
        """Plot data: ``loss_step``, ``loss``, ``grad_step``, ``grad`` (per-parameter norms, in
        ``param_names`` order), ``weight_params`` (the conv/linear weights), ``events`` and
        ``histograms`` (:meth:`.histograms.HistogramProbe.history`)."""
        col = self._collector
        return {
            **{k: list(v) for k, v in col.plot.items()},
            "param_names": [n for n, _ in col.params],
            "weight_params": [n for n, _ in col.params if n in col.weight_names],
            "events": list(self._events),
            "histograms": self._hist.history(),
        }

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything recorded, as tensors and plain values (``torch.load(weights_only=True)`` safe).

        Under DDP call it right after :meth:`end_epoch` or :meth:`flush` (collective), so that no
        step is pending; alone it flushes first.

        Raises:
            UsageError: under DDP with steps recorded since the last flush.
        """
        if self._collector.pending:
            if self._reducer.enabled:
                raise UsageError(
                    "Monitor.state_dict() under DDP needs every rank to call mon.flush() (or "
                    "end_epoch()) first; steps are pending"
                )
            self.flush()
        return {
            "collector": self._collector.state_dict(),
            "findings": [f.to_dict() for f in self._findings],
            "last_fired": dict(self._last_fired),
            "events": list(self._events),
            "epochs": [asdict(e) for e in self._epochs],
            "warned_zero": self._warned_zero,
            "init": self._init.state_dict(),
            "histograms": self._hist.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (e.g. stored in a training checkpoint)."""
        self._collector.load_state_dict(state["collector"])
        self._findings = [Finding(**f) for f in state["findings"]]
        self._last_fired = dict(state["last_fired"])
        self._events = list(state["events"])
        self._epochs = [Epoch(**e) for e in state["epochs"]]
        self._warned_zero = bool(state["warned_zero"])
        self._init.load_state_dict(state.get("init"))
        if "histograms" in state:
            self._hist.load_state_dict(state["histograms"])

    def close(self) -> None:
        """Remove the monitor's hooks from the model and optimizer (idempotent); with a writer,
        write the steps recorded since the last sync first (outside DDP, where that is collective)."""
        if self._log is not None and not self._reducer.enabled and self._collector.pending:
            self.flush()
        self._collector.close()
        self._init.remove()
        self._hist.remove()

    def __enter__(self) -> Monitor:  # noqa: PYI034  (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Monitor({self._name}, step={self._collector.step}, findings={len(self._findings)})"


def _opt_float(x: Any) -> float | None:
    if x is None:
        return None
    return float(x.detach().float().mean()) if isinstance(x, torch.Tensor) else float(x)
