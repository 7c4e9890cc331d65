"""Write what the monitor read back to TensorBoard: scalars, per-layer histograms, findings as text.

The monitor never imports TensorBoard: the user passes the writer
(``torch.utils.tensorboard.SummaryWriter``, or anything with its ``add_scalar``, ``add_text`` and,
for histograms, ``add_histogram_raw`` methods, such as a Lightning logger's ``experiment``). Writes
happen at each sync, from the numbers already copied to the host, so a writer adds no device
sync; each step is written once, at its own ``global_step``.

Tags (``convdoctor/`` prefix): ``loss`` (every step), ``grad_norm`` (total L2 norm, every sampled
step), ``update_ratio/<group>`` and ``lr/<group>`` (every update measurement), ``epoch/train_loss``,
``epoch/train_acc``, ``epoch/val_loss``, ``epoch/val_acc`` (at each epoch's last step),
``gradients/<layer>`` and ``activations/<layer>`` (histograms, see :mod:`.histograms`), and
``findings/<CODE>`` (the finding as Markdown, at the step it fired).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ..findings import Finding
from .histograms import BINS, HistStep, bucket_limits
from .window import Epoch, Window

#: Tag prefix of everything the monitor writes.
PREFIX = "convdoctor"


def check_writer(writer: Any) -> None:
    """Raise a one-line error unless ``writer`` looks like a ``SummaryWriter``."""
    missing = [m for m in ("add_scalar", "add_text") if not callable(getattr(writer, m, None))]
    if missing:
        raise UsageError(
            f"writer= needs a torch.utils.tensorboard.SummaryWriter (or an object with add_scalar, add_text and "
            f"add_histogram_raw); {type(writer).__name__} has no {', '.join(missing)}"
        )


def finding_markdown(finding: Finding, step: int) -> str:
    """A finding as the Markdown TensorBoard's text tab shows."""
    where = f" in `{finding.where}`" if finding.where else ""
    return (
        f"**{finding.code}** ({finding.severity.value}, step {step}){where}: {finding.title}\n\n"
        f"{finding.message}\n\n**Fix:** {finding.fix}"
    )


class TensorBoardLog:
    """Writes each newly read-back step once. :class:`~convdoctor.monitor.Monitor` owns one per writer."""

    def __init__(self, writer: Any) -> None:
        check_writer(writer)
        self.writer = writer
        self._histograms = callable(getattr(writer, "add_histogram_raw", None))
        self._next = {"loss": 0, "grad": 0, "update": 0, "epoch": 0}

    def log(self, window: Window, histograms: Sequence[HistStep], findings: Sequence[Finding]) -> None:
        """Write the steps of ``window`` not written yet, the new histograms and the new findings."""
        w = self.writer
        for i, value in enumerate(window.loss):
            step = window.loss_start + i
            if step >= self._next["loss"]:
                w.add_scalar(f"{PREFIX}/loss", float(value), step)
        self._next["loss"] = max(self._next["loss"], window.loss_start + window.loss.size)
        for step, value in zip(window.grad_steps.tolist(), window.total_grad_norms().tolist()):
            if step >= self._next["grad"]:
                w.add_scalar(f"{PREFIX}/grad_norm", value, step)
                self._next["grad"] = step + 1
        self._updates(window)
        self._epochs(window.epochs)
        if self._histograms:
            self._write_histograms(histograms)
        for f in findings:
            step = int(f.evidence.get("step", window.step))
            w.add_text(f"{PREFIX}/findings/{f.code}", finding_markdown(f, step), step)
        flush = getattr(w, "flush", None)
        if callable(flush):
            flush()

    def _updates(self, window: Window) -> None:
        for j, step in enumerate(window.update_steps.tolist()):
            if step < self._next["update"] or window.update_ratio.shape[1] != len(window.group_names):
                continue
            for g, name in enumerate(window.group_names):
                self.writer.add_scalar(f"{PREFIX}/update_ratio/{name}", float(window.update_ratio[j, g]), step)
                self.writer.add_scalar(f"{PREFIX}/lr/{name}", float(window.group_lr[j, g]), step)
            self._next["update"] = step + 1

    def _epochs(self, epochs: tuple[Epoch, ...]) -> None:
        for e in epochs[self._next["epoch"] :]:
            for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                value = getattr(e, key)
                if value is not None and math.isfinite(value):
                    self.writer.add_scalar(f"{PREFIX}/epoch/{key}", value, e.step)
        self._next["epoch"] = len(epochs)

    def _write_histograms(self, histograms: Sequence[HistStep]) -> None:
        limits = bucket_limits()
        for step, names, act, grad in histograms:
            for kind, rows in (("activations", act), ("gradients", grad)):
                for name, row in zip(names, rows):
                    counts = row[:BINS]
                    num = float(counts.sum())
                    if num == 0:
                        continue
                    self.writer.add_histogram_raw(
                        f"{PREFIX}/{kind}/{name or 'root'}",
                        min=float(row[BINS]),
                        max=float(row[BINS + 1]),
                        num=num,
                        sum=float(row[BINS + 2]),
                        sum_squares=float(row[BINS + 3]),
                        bucket_limits=limits,
                        bucket_counts=counts.tolist(),
                        global_step=step,
                    )
