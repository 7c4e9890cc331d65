"""A thin Lightning callback around :class:`~convdoctor.monitor.Monitor` (optional extra).

Importing this module imports Lightning; ``import convdoctor`` never does. Install with
``pip install lightning`` (or ``pip install convdoctor[lightning]``)::

    from convdoctor.monitor.lightning import MonitorCallback
    cb = MonitorCallback(num_classes=10)
    trainer = lightning.Trainer(callbacks=[cb])
    trainer.fit(module)
    cb.monitor.findings

Lightning hands the gradients and the loss to different hooks, so the callback calls the
two halves of ``Monitor.step``: ``record_gradients`` in ``on_before_optimizer_step`` (after
backward, before the step: unscaled under AMP) and ``record_batch`` in ``on_train_batch_end``.
For class statistics, return the logits from ``training_step``: ``{"loss": loss,
"logits": logits}``; the targets are read from ``batch[1]`` (or ``batch["y"]``/``["target"]``).
Epoch numbers come from ``trainer.callback_metrics`` under the keys you name.
The monitor logs to the trainer's logger (``log=True``): to a ``TensorBoardLogger`` everything
``Monitor(writer=...)`` writes (scalars, per-layer histograms, findings as text, through the
logger's ``SummaryWriter``), to any other logger the scalars (``log_metrics``).
Under DDP and FSDP2 strategies every rank runs the callback and the statistics are reduced
(``ddp=None``); the monitor is created in ``on_fit_start``, after ``configure_model`` has
sharded the model.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from . import Monitor

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        raise ImportError("convdoctor.monitor.lightning needs Lightning: pip install lightning") from None


class MonitorCallback(pl.Callback):
    """Runs a :class:`Monitor` on the module being fitted.

    Args:
        num_classes: passed to :class:`Monitor`.
        every: passed to :class:`Monitor`.
        train_loss_key: ``callback_metrics`` key of the epoch's training loss (optional).
        val_loss_key: key of the validation loss, which enables OVERFITTING.
        val_acc_key: key of the validation accuracy.
        histograms: passed to :class:`Monitor`.
        log: write to the trainer's logger (see the module docstring).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        every: int = 1,
        *,
        train_loss_key: str = "train_loss",
        val_loss_key: str = "val_loss",
        val_acc_key: str = "val_acc",
        histograms: bool = True,
        log: bool = True,
    ) -> None:
        self.num_classes, self.every = num_classes, every
        self.histograms, self.log = histograms, log
        self.keys = (train_loss_key, val_loss_key, val_acc_key)
        self.monitor: Monitor | None = None
        self._pending_state: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Create the monitor when fitting starts: after ``configure_model`` and the strategy's
        setup, so a model sharded there (FSDP2 ``fully_shard``) is watched as sharded."""
        if self.monitor is None:
            writer = _writer(trainer) if self.log else None
            self.monitor = Monitor(
                pl_module, num_classes=self.num_classes, every=self.every, histograms=self.histograms, writer=writer
            )
            if self._pending_state is not None:
                self.monitor.load_state_dict(self._pending_state)
                self._pending_state = None

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """After backward, before the optimizer step: record gradients (and arm the update ratio)."""
        if self.monitor is not None:
            self.monitor.record_gradients(optimizer)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the step: record the loss, and the logits/targets when the step returned them."""
        if self.monitor is None or outputs is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            raise UsageError("MonitorCallback needs training_step to return the loss (or {'loss': loss, ...})")
        logits = outputs.get("logits") if isinstance(outputs, dict) else None
        self.monitor.record_batch(loss, logits, _targets(batch) if logits is not None else None)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the epoch with the metrics Lightning logged (validation runs before this hook)."""
        if self.monitor is None:
            return
        metrics = trainer.callback_metrics
        values = [metrics.get(k) for k in self.keys]
        self.monitor.end_epoch(*[None if v is None else float(v) for v in values])

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Remove the monitor's hooks when fitting ends; the findings stay readable."""
        if self.monitor is not None and stage == "fit":
            self.monitor.close()

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state, saved in Lightning checkpoints."""
        return {"monitor": self.monitor.state_dict()} if self.monitor is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the monitor when resuming from a checkpoint (before or after ``setup``)."""
        state = state_dict.get("monitor")
        if state is None:
            return
        if self.monitor is None:
            self._pending_state = state
        else:
            self.monitor.load_state_dict(state)


class _MetricsWriter:
    """The scalar part of a ``SummaryWriter`` over any Lightning logger's ``log_metrics``."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.logger.log_metrics({tag: value}, step=global_step)

    def add_text(self, tag: str, text: str, global_step: int) -> None:
        """Loggers without text support get none (the findings stay on ``callback.monitor``)."""


def _writer(trainer: Any) -> Any:
    """The trainer's first logger as a writer: its ``SummaryWriter`` when it has one, else its metrics."""
    loggers = getattr(trainer, "loggers", None) or []
    if not loggers:
        return None
    experiment = getattr(loggers[0], "experiment", None)
    if all(callable(getattr(experiment, m, None)) for m in ("add_scalar", "add_text", "add_histogram_raw")):
        return experiment
    return _MetricsWriter(loggers[0])


def _targets(batch: Any) -> Any:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    if isinstance(batch, dict):
        for key in ("y", "target", "targets", "label", "labels"):
            if key in batch:
                return batch[key]
    return None
